"""Input rules of every deploy and pipeline option, checked before any AWS call.

Each check returns nothing or raises ``click.BadParameter`` naming the option and the
rule (AWS's naming rules, Fargate's CPU/memory pairs, Lambda's ranges), so a mistake
costs nothing: the commands call these before the first call that changes anything.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import click

from rendezvous.settings import redact_url

# The longest suffix any command appends to --name (server: "-task-execution"; pipeline:
# "-initialize", "-fmi-client"). IAM role and Lambda function names stop at 64 chars.
SERVER_SUFFIXES = ("-task-execution", "-dns-refresher", "-task-running", "-server")
PIPELINE_SUFFIXES = ("-initialize", "-summarize", "-worker", "-fmi-client", "-lambda", "-states")
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

# Fargate: CPU units -> allowed memory (MiB).
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
LAMBDA_MEMORY = (128, 10240)
LAMBDA_TIMEOUT = (1, 900)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# docker reference grammar (distribution/reference), without the digest algorithms' details
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_ECR_HOST = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
)
_BUCKET = re.compile(r"(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _bad(option: str, message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint=option)


def resource_name(value: str, option: str = "--name", suffixes: tuple[str, ...] = ()) -> None:
    """A prefix that makes valid IAM, ECS, ECR, Lambda, EventBridge and log group names."""
    longest = max((len(s) for s in suffixes), default=0)
    limit = 64 - longest
    if not _NAME.fullmatch(value):
        raise _bad(
            option,
            f"{value!r} is not a valid name: use lower-case letters, digits and single "
            "hyphens, starting with a letter (ECR repositories are lower case; IAM, ECS "
            "and Lambda names allow no dots or spaces), e.g. rendezvous-staging",
        )
    if len(value) > limit:
        raise _bad(
            option,
            f"{value!r} is {len(value)} characters; at most {limit}, because names derived "
            f"from it (e.g. {value}{max(suffixes, key=len)}) must fit IAM's and Lambda's "
            "64-character limit",
        )


def fargate_size(cpu: int, memory: int) -> None:
    """A CPU/memory pair Fargate accepts."""
    if cpu not in FARGATE_MEMORY:
        raise _bad(
            "--cpu",
            f"{cpu} is not a Fargate CPU size; pick one of {', '.join(map(str, FARGATE_MEMORY))}",
        )
    allowed = FARGATE_MEMORY[cpu]
    if memory not in allowed:
        shown = (
            ", ".join(map(str, allowed))
            if len(allowed) <= 4
            else f"{allowed[0]}-{allowed[-1]} in steps of {allowed[1] - allowed[0]}"
        )
        raise _bad(
            "--memory", f"{memory} MiB does not go with --cpu {cpu} on Fargate; allowed: {shown}"
        )


def dns_name(value: str, option: str = "--record") -> None:
    """A fully qualified DNS name: labels of 1-63 letters, digits, hyphens; <= 253 chars."""
    name = value.rstrip(".").lower()
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise _bad(
            option,
            f"{value!r} is not a DNS name: give a fully qualified name "
            "such as rdv.example.com (labels of 1-63 letters, digits and inner "
            "hyphens, 253 characters in all)",
        )


def cidr(value: str, option: str = "--admin-cidr") -> None:
    """An IPv4 network in CIDR notation with no host bits set."""
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError as err:
        raise _bad(
            option, f"{value!r} is not an IPv4 CIDR block such as 203.0.113.0/24 ({err})"
        ) from None
    if str(network) != value:
        raise _bad(
            option, f"{value!r} has host bits set or is not in canonical form; write {network}"
        )


def lambda_memory(value: int, option: str = "--worker-memory") -> None:
    low, high = LAMBDA_MEMORY
    if not low <= value <= high:
        raise _bad(option, f"{value} MB is outside Lambda's range {low}-{high} MB")


def lambda_timeout(value: int, option: str = "--worker-timeout") -> None:
    low, high = LAMBDA_TIMEOUT
    if not low <= value <= high:
        raise _bad(option, f"{value} s is outside Lambda's range {low}-{high} s")


def image_reference(value: str, option: str = "--image-uri") -> tuple[str, str] | None:
    """A docker image reference; returns (registry host, repository path) when it has a
    registry part, else None (a Docker Hub image)."""
    found = _IMAGE.fullmatch(value)
    if not value or found is None or len(value) > 1024:
        raise _bad(
            option,
            f"{value!r} is not an image reference: expected "
            "REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. "
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/rendezvous:1.0",
        )
    domain = found.group("domain")
    if domain and ("." not in domain and ":" not in domain and domain != "localhost"):
        # "team/image": the first component is a Docker Hub namespace, not a host
        return None
    return (domain, found.group("path")) if domain else None


def ecr_image(value: str, option: str = "--image-uri") -> tuple[str, str, str] | None:
    """(account, region, repository) when ``value`` is in a private ECR registry."""
    parts = image_reference(value, option)
    if parts is None:
        return None
    host = _ECR_HOST.fullmatch(parts[0])
    return (host.group("account"), host.group("region"), parts[1]) if host else None


def lambda_image(value: str, option: str = "--image-uri") -> None:
    """Lambda runs container images only from a private ECR repository."""
    if ecr_image(value, option) is None:
        raise _bad(
            option,
            f"{value!r} is not in a private ECR repository "
            "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG): Lambda takes "
            "container images only from ECR; push it there or use --build",
        )


def url(value: str, option: str = "--endpoint-url") -> None:
    """An http(s) URL with a host, as botocore needs it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(
            option,
            f"{value!r} is not a URL with a scheme: write it as "
            f"http://{value.split('://')[-1] or 'HOST:PORT'} (or https://...)",
        )


def env_item(item: str, option: str = "--env") -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not _ENV_KEY.fullmatch(key):
        raise _bad(
            option,
            f"{item!r} is not KEY=VALUE with KEY of letters, digits and "
            "underscores (not starting with a digit)",
        )
    return key, value


def subnet_id(value: str, option: str = "--subnet") -> None:
    if not re.fullmatch(r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?", value):
        raise _bad(option, f"{value!r} is not a subnet id (subnet- and 8 or 17 hex digits)")


def bucket(value: str, option: str = "--bucket") -> None:
    """An S3 location: bucket name (AWS rules) with an optional /prefix."""
    name = value.removeprefix("s3://").split("/", 1)[0]
    if not _BUCKET.fullmatch(name) or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        raise _bad(
            option,
            f"{value!r}: {name!r} is not an S3 bucket name (3-63 lower-case "
            "letters, digits, dots and hyphens, starting and ending with a letter "
            "or digit, not an IP address)",
        )


def masked_url(value: str) -> str:
    """``value`` with whatever stands before its last ``@`` (user, password) and any
    query (``?password=``) replaced by ``***``: safe to print, even when a password
    holds ``/``, ``?`` or ``#`` and so ends the URL's authority early."""
    if "://" in value:
        return redact_url(value)
    return "***@" + value.rpartition("@")[2] if "@" in value else value


_REDIS_FORM = (
    "write redis://HOST:6379/0 (rediss:// for TLS, a password as redis://:PASSWORD@HOST:6379/0)"
)


def redis_url(value: str, option: str = "--redis-url") -> None:
    """redis:// or rediss://, a host, an optional port and database number; errors show
    the URL masked (it may hold a password), never a parser's message (which may quote
    part of it)."""
    shown = masked_url(value)
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss"):
        raise _bad(option, f"{shown!r} is not a Redis URL: {_REDIS_FORM}")
    if "@" in value and "@" not in parts.netloc:
        raise _bad(
            option,
            f"{shown!r}: the part before the host ends early, at a '/', '?' or '#': "
            "percent-encode those characters in the user name and password (/ as %2F, ? "
            "as %3F, # as %23, % as %25, @ as %40)",
        )
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise _bad(
            option, f"{shown!r}: the port must be a number 1-65535, e.g. HOST:6379"
        ) from None
    if not host:
        raise _bad(option, f"{shown!r} names no host: {_REDIS_FORM}")
    if port == 0 or not re.fullmatch(r"(/\d{0,2})?", parts.path) or parts.fragment:
        raise _bad(
            option, f"{shown!r}: the port must be 1-65535 and the path a database number such as /0"
        )


def replicas(value: int, maximum: int, option: str = "--replicas") -> None:
    """1 (one task, a record that follows it) or 2..maximum tasks behind a load balancer."""
    if not 1 <= value <= maximum:
        raise _bad(
            option,
            f"{value} is outside 1-{maximum}: 1 runs one task (the record follows it), "
            f"2-{maximum} run that many behind a network load balancer",
        )


def balancer_name(value: str, option: str = "--name") -> None:
    """ELBv2 names (load balancer, target groups) stop at 32 characters."""
    longest = max(("-nlb", "-rdv", "-disc", "-cache"), key=len)
    if len(value) + len(longest) > 32:
        raise _bad(
            option,
            f"{value!r} is {len(value)} characters; with --replicas at most "
            f"{32 - len(longest)}, because the load balancer's names ({value}{longest}) stop "
            "at 32 characters",
        )

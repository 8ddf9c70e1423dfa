"""``rendezvous-deploy server ...``: up, dns-refresh, status, down, policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from rendezvous_deploy import validate
from rendezvous_deploy.aws import Aws
from rendezvous_deploy.config import aws_options, config_option, env_name
from rendezvous_deploy.errors import friendly as _friendly
from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server.dnscheck import parse_server
from rendezvous_deploy.server.settings import (
    DEFAULT_NAME,
    MAX_REPLICAS,
    ServerSettings,
    Waits,
)

F = TypeVar("F", bound=Callable[..., Any])


def _opt(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads RENDEZVOUS_DEPLOY_<NAME> and shows that in --help."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0][2:]
    return click.option(*decls, envvar=env_name(long_name), show_envvar=True, **kwargs)


def _stack_options(func: F) -> F:
    """Options every server command needs to find the deployment."""
    options = [
        config_option("server"),
        _opt("--name", default=DEFAULT_NAME, show_default=True,
             help="Name of the deployment: service, task family, log group, roles derive "
             "from it."),
        _opt("--cluster", default="", help="ECS cluster (default: the --name)."),
        _opt("--record", default="", help="DNS name of the server, e.g. rdv.example.com."),
        _opt("--zone", default="", help="Hosted zone id or name (default: the closest "
             "public zone that holds --record)."),
        _opt("--ttl", default=60, show_default=True, type=click.IntRange(1),
             help="TTL of the A record in seconds."),
        _opt("--dns-server", "dns_servers", multiple=True, metavar="HOST[:PORT]",
             help="Verify against these name servers instead of the zone's NS set "
             "(repeatable)."),
        _opt("--verify-dns/--no-verify-dns", default=True, show_default=True,
             help="Ask the authoritative name servers until they answer the new IP."),
        _opt("--poll-interval", default=5.0, show_default=True, type=click.FloatRange(0.01),
             help="Seconds between checks while waiting."),
        _opt("--task-timeout", default=600.0, show_default=True, type=click.FloatRange(0),
             help="Seconds to wait for a running, healthy task."),
        _opt("--dns-timeout", default=180.0, show_default=True, type=click.FloatRange(0),
             help="Seconds to wait for Route 53 and the name servers."),
        _opt("--cache-timeout", default=1200.0, show_default=True, type=click.FloatRange(0),
             help="With replicas: seconds to wait for the ElastiCache `up` creates (or "
             "`down --delete` removes); AWS takes 5-15 minutes."),
        aws_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _validate(params: dict[str, Any]) -> None:
    """Every option against its rule, before any AWS call (a mistake costs nothing)."""
    validate.resource_name(params["name"], "--name", validate.SERVER_SUFFIXES)
    if params.get("cluster"):
        validate.resource_name(params["cluster"], "--cluster")
    if params.get("record"):
        validate.dns_name(params["record"], "--record")
    if params.get("zone") and not params["zone"].startswith(("Z", "/hostedzone/")):
        validate.dns_name(params["zone"], "--zone")
    if "cpu" in params:
        validate.fargate_size(params["cpu"], params["memory"])
    if params.get("admin_cidr"):
        validate.cidr(params["admin_cidr"], "--admin-cidr")
    if params.get("image_uri"):
        validate.image_reference(params["image_uri"], "--image-uri")
    elif "local_image" in params:
        validate.image_reference(params["local_image"], "--local-image")
    for subnet in params.get("subnets", ()):
        validate.subnet_id(subnet)
    if "replicas" in params:
        validate.replicas(params["replicas"], MAX_REPLICAS)
        if params["replicas"] > 1:
            validate.balancer_name(params["name"])
    if params.get("redis_url"):
        validate.redis_url(params["redis_url"])
        if params.get("replicas", 1) == 1:
            source = click.get_current_context().get_parameter_source("redis_url")
            given = (
                f"--redis-url (from ${env_name('redis-url')})"
                if source is click.core.ParameterSource.ENVIRONMENT
                else "--redis-url"
            )
            raise click.UsageError(
                f"{given} only applies with --replicas 2 or more (one task keeps its room "
                "in memory): add --replicas N or drop --redis-url"
            )
    if params.get("allow_v1"):
        import re

        try:
            re.compile(params["allow_v1"])
        except re.error as err:
            raise click.BadParameter(
                f"{params['allow_v1']!r} is not a regular expression: {err}",
                param_hint="--allow-v1",
            ) from None


def _settings(params: dict[str, Any]) -> tuple[Aws, ServerSettings]:
    aws = Aws(
        region=params.pop("region", None),
        endpoint_url=params.pop("endpoint_url", None),
        profile=params.pop("profile", None),
    )
    waits = Waits(
        poll=params.pop("poll_interval"),
        task_timeout=params.pop("task_timeout"),
        dns_timeout=params.pop("dns_timeout"),
        cache_timeout=params.pop("cache_timeout"),
    )
    environment = [validate.env_item(item) for item in params.pop("env", ()) or ()]
    params["subnets"] = tuple(params.pop("subnet", ()) or ())
    _validate(params)
    params["dns_servers"] = tuple(params.get("dns_servers") or ())
    for server_text in params["dns_servers"]:
        try:
            parse_server(server_text)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--dns-server") from None
    settings = ServerSettings(waits=waits, environment=tuple(environment), **params)
    return aws, settings


@click.group()
def server() -> None:
    """Deploy and operate the rendezvous server on ECS Fargate.

    `up` puts the server on Fargate and points a Route 53 A record at its task; an
    EventBridge rule then keeps the record on the task whenever ECS replaces it. With
    `--replicas N` it runs N tasks behind a network load balancer instead, the record an
    alias to it.
    """


@server.command()
@_stack_options
@_opt("--image-uri", default="", help="Deploy this image; without it the local "
      "--local-image is pushed to an ECR repository named like --name.")
@_opt("--local-image", default="rendezvous:latest", show_default=True,
      help="Local image to push (built by `make image`), via the docker SDK (DOCKER_HOST).")
@_opt("--cpu", default=1024, show_default=True, type=int, help="Task CPU units.")
@_opt("--memory", default=3072, show_default=True, type=int, help="Task memory (MiB).")
@_opt("--admin-cidr", default="", help="Who may reach the HTTP port 10001 "
      "(health, metrics); default: the VPC's CIDR.")
@_opt("--subnet", multiple=True, help="Subnet id (repeatable; default: the default VPC's "
      "default subnets).")
@_opt("--assign-public-ip/--no-assign-public-ip", default=True, show_default=True,
      help="Give the task a public IP (required unless the subnets map one on launch).")
@_opt("--env", multiple=True, metavar="KEY=VALUE", help="Extra container environment "
      "(repeatable), e.g. RENDEZVOUS_LOG_LEVEL=debug.")
@_opt("--follow/--no-follow", default=True, show_default=True,
      help="Install the EventBridge rule + Lambda that keep the record on the task.")
@_opt("--auth/--no-auth", default=True, show_default=True,
      help="Require credentials: keep the server's auth secret in Secrets Manager "
      "(rendezvous/NAME/auth-secret, made once) and give it to the task. --no-auth: "
      "anyone who reaches the server may register any name.")
@_opt("--allow-v1", default="", metavar="REGEX",
      help="With auth, let v1 clients (FMI, the C++ client) register names matching "
      "this pattern in full; other v1 names are refused.")
@_opt("--replicas", default=1, show_default=True, type=int, metavar="N",
      help=f"Tasks to run (1-{MAX_REPLICAS}). 1: one task with a public IP, the record "
      "follows it. 2 or more: behind a network load balancer, the record an alias to it, "
      "the tasks sharing their room in Redis.")
@_opt("--redis-url", default="", metavar="URL",
      help="With --replicas N: the Redis the replicas share (redis://HOST:6379/0, rediss:// "
      "for TLS, redis://:PASSWORD@HOST:6379/0 with / ? # % @ in the password "
      "percent-encoded; kept in Secrets Manager, never printed; prefer the environment "
      "variable, which stays out of shell history). Without it `up` creates a small "
      "ElastiCache.")
@_friendly
def up(**params: Any) -> None:
    """Create or update everything, wait for a healthy task, point DNS at it.

    Prints host:10000 on stdout when the record resolves to the task at the zone's
    authoritative name servers (with --replicas N: when N tasks are healthy behind the
    load balancer and the record is an alias to it). Running it again with nothing
    changed changes nothing.
    """
    from rendezvous_deploy.server.commands import up as run_up

    aws, settings = _settings(params)
    if not settings.record:
        raise click.UsageError("--record is required (the DNS name clients will use)")
    if settings.allow_v1 and not settings.auth:
        raise click.UsageError("--allow-v1 only applies with auth on (without auth every "
                               "v1 name is allowed): drop it or --no-auth")
    if any(key == "RENDEZVOUS_AUTH_SECRET" for key, _ in settings.environment):
        raise click.UsageError(
            "--env RENDEZVOUS_AUTH_SECRET would put the secret in the task definition for "
            "anyone to read: `up` keeps it in Secrets Manager instead (the default --auth)"
        )
    if any(key == "RENDEZVOUS_REDIS_URL" for key, _ in settings.environment):
        raise click.UsageError("--env RENDEZVOUS_REDIS_URL: pass the URL as --redis-url "
                               "(with --replicas N), which never prints its password")
    result = run_up(aws, settings, Reporter())
    click.echo(result.endpoint)


@server.command("dns-refresh")
@_stack_options
@_friendly
def dns_refresh(**params: Any) -> None:
    """Point the record at the running task's public IP (no change when already equal)."""
    from rendezvous_deploy.server.commands import dns_refresh as run_refresh

    aws, settings = _settings(params)
    if not settings.record:
        raise click.UsageError("--record is required")
    result = run_refresh(aws, settings, Reporter())
    click.echo(f"{settings.fqdn.rstrip('.')}:{settings.port}")
    del result


@server.command()
@_stack_options
@_friendly
def status(**params: Any) -> None:
    """Show the task's state, health, public IP, the record's value and the last stop."""
    from rendezvous_deploy.server.commands import status as run_status
    from rendezvous_deploy.server.commands import status_table

    aws, settings = _settings(params)
    from rendezvous_deploy.progress import make_console

    make_console(stderr=False).print(status_table(run_status(aws, settings)))


@server.command()
@_stack_options
@click.option("--delete", is_flag=True, help="Delete the service and the record-follower "
              "rule and function instead of scaling to zero.")
@click.option("--remove-record", is_flag=True, help="Also delete the A record.")
@_friendly
def down(delete: bool, remove_record: bool, **params: Any) -> None:
    """Scale the service to zero (or delete it); optionally remove the record."""
    from rendezvous_deploy.server.commands import down as run_down

    if remove_record and not params.get("record"):
        raise click.UsageError("--remove-record needs --record NAME (nothing was changed)")
    aws, settings = _settings(params)
    run_down(aws, settings, Reporter(), delete=delete, remove_record=remove_record)


@server.command()
@click.option("--account", required=True, help="Your 12-digit AWS account id.")
@click.option("--region", required=True, help="The region `up` deploys to, e.g. eu-west-1.")
@click.option(
    "--name", default=DEFAULT_NAME, show_default=True, help="The name prefix `up` uses (--name)."
)
@click.option("--hosted-zone-id", required=True, help="The Route 53 zone of the record (Z...).")
@click.option("--record", required=True, help="The server's record, e.g. rdv.example.com.")
def policy(account: str, region: str, name: str, hosted_zone_id: str, record: str) -> None:
    """Print the least-privilege IAM policy for whoever runs `server up`, filled in.

    It is deploy/iam/deployer.json with your account, region, name prefix, zone and
    record; no AWS call is made. Attach it, for example:

    \b
      rendezvous-deploy server policy --account 123456789012 --region eu-west-1 \\
          --hosted-zone-id Z0123456789 --record rdv.example.com > deployer.json
      aws iam put-user-policy --user-name me --policy-name rendezvous-deployer \\
          --policy-document file://deployer.json
    """
    import json
    import re

    from rendezvous_deploy import roles

    if not re.fullmatch(r"\d{12}", account):
        raise click.BadParameter(
            f"{account!r} is not a 12-digit account id", param_hint="--account"
        )
    # Each value lands in ARNs and conditions: a '*' or '?' would widen the policy.
    if not re.fullmatch(r"[a-z]{2}(?:-[a-z]+)+-\d", region):
        raise click.BadParameter(
            f"{region!r} is not a region name such as eu-west-1", param_hint="--region"
        )
    validate.resource_name(name, "--name", validate.SERVER_SUFFIXES)
    zone = hosted_zone_id.rsplit("/", 1)[-1]  # accepts "/hostedzone/Z..." as the API prints it
    if not re.fullmatch(r"Z[A-Z0-9]{1,31}", zone):
        raise click.BadParameter(
            f"{hosted_zone_id!r} is not a hosted zone id such as Z0123456789ABC (aws "
            "route53 list-hosted-zones shows yours)",
            param_hint="--hosted-zone-id",
        )
    validate.dns_name(record, "--record")
    document = roles.policy(
        "deployer",
        Region=region,
        Account=account,
        Prefix=name,
        HostedZoneId=zone,
        RecordName=record.lower().rstrip("."),  # how Route 53 normalises record names
    )
    click.echo(json.dumps(document, indent=2))

"""The pipeline's input payload and Map items: validation, natural ordering, rank assignment.

Pure functions over dicts and lists, so every rule is tested without AWS. The field names
are the users' own (FIELD-NOTES.md); a payload is checked as a whole before anything fans
out, and every problem is reported in one message.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_BATCH_SIZE = 512
DEFAULT_TIMEOUT_S = 120.0
GLOBAL_SUMMARY = "global.json"  # written by rank 0 under result_path
MAX_WORLD_SIZE = 10_000  # a Distributed Map runs at most 10,000 children at once
#: How the ranks' links may go (fmi_client's ``relay=``): "auto" punches and relays
#: through the rendezvous server when punching fails, "never" only punches, "always"
#: relays. The payload's ``relay``, the item's RELAY.
RELAY_MODES = ("auto", "never", "always")
DEFAULT_RELAY = "auto"

REQUIRED = ("bucket", "data_prefix", "result_path", "world_size", "rendezvous_endpoint")
OPTIONAL = (
    "data_bucket",
    "file_limit",
    "batch_size",
    "object_type",
    "S3_object_name",
    "script",
    "max_concurrency",
    "timeout",
    "run_id",
    "comm_name",
    "relay",
    "comment",
    "Comment",
)
KNOWN = REQUIRED + OPTIONAL

# Map item fields, exactly as the users' workers read them.
ITEM_FIELDS = (
    "S3_BUCKET",
    "S3_OBJECT_NAME",
    "SCRIPT",
    "S3_OBJECT_TYPE",
    "WORLD_SIZE",
    "RANK",
    "DATA_BUCKET",
    "DATA_PREFIX",
    "DATA_PATH",
    "RESULT_PATH",
    "BATCH_SIZE",
)


class PayloadError(ValueError):
    """The payload has one or more missing or invalid fields (all listed in the message)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid pipeline payload ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}\n"
            f"required fields: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL[:-2])}"
        )


@dataclass(frozen=True)
class Payload:
    """A validated payload with typed values and defaults filled in."""

    bucket: str
    data_bucket: str
    data_prefix: str
    result_path: str
    world_size: int
    rendezvous_endpoint: str
    batch_size: int = DEFAULT_BATCH_SIZE
    file_limit: int | None = None
    object_type: str = "folder"
    s3_object_name: str = ""
    script: str = ""
    max_concurrency: int = 0
    timeout: float = DEFAULT_TIMEOUT_S
    run_id: str = ""
    comm_name: str = ""  # the ranks' pairing names start with it (default pipeline-<run_id>)
    relay: str = DEFAULT_RELAY  # RELAY_MODES


def _int(value: Any, name: str, problems: list[str], *, minimum: int = 1) -> int | None:
    """An integer given as a number or a numeric string (the users' payloads use both)."""
    if isinstance(value, bool):
        problems.append(f"{name}: expected an integer, got {value!r}")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        problems.append(f"{name}: expected an integer, got {value!r}")
        return None
    if value < minimum:
        problems.append(f"{name}: must be at least {minimum}, got {value}")
        return None
    return value


def _str(value: Any, name: str, problems: list[str], *, allow_empty: bool = False) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        problems.append(f"{name}: expected a string, got {value!r}")
        return ""
    if not allow_empty and not value.strip():
        problems.append(f"{name}: must not be empty")
    return value.strip()


def _hint(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_endpoint(value: str) -> str | None:
    """Why ``host:port`` is not a usable rendezvous endpoint, or None when it is."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"rendezvous_endpoint: expected 'host:port', got {value!r}"
    return None


def validate_relay(value: Any, name: str) -> str | None:
    """Why ``value`` is not a relay setting, or None when it is."""
    if isinstance(value, str) and value in RELAY_MODES:
        return None
    return (
        f"{name}: expected 'auto' (punch, relay when that fails), 'never' (punch only) or "
        f"'always' (relay only), got {value!r}"
    )


def validate_payload(raw: Any) -> Payload:
    """Check the whole payload; raise PayloadError listing every problem at once."""
    if not isinstance(raw, dict):
        raise PayloadError([f"payload must be a JSON object, got {type(raw).__name__}"])
    problems: list[str] = []
    unknown = [k for k in raw if k not in KNOWN]
    for key in REQUIRED:
        if key not in raw or raw[key] is None:
            problems.append(f"missing field {key!r}{_hint(key, unknown)}")
    for key in unknown:
        problems.append(f"unknown field {key!r}{_hint(key, KNOWN)}")

    bucket = _str(raw["bucket"], "bucket", problems) if raw.get("bucket") is not None else ""
    data_bucket = bucket
    if raw.get("data_bucket") not in (None, ""):
        data_bucket = _str(raw["data_bucket"], "data_bucket", problems)
    data_prefix = ""
    if raw.get("data_prefix") is not None:
        data_prefix = _str(raw["data_prefix"], "data_prefix", problems, allow_empty=True)
    result_path = ""
    if raw.get("result_path") is not None:
        result_path = _str(raw["result_path"], "result_path", problems).strip("/")
    world_size = None
    if raw.get("world_size") is not None:
        world_size = _int(raw["world_size"], "world_size", problems)
        if world_size is not None and world_size > MAX_WORLD_SIZE:
            problems.append(f"world_size: at most {MAX_WORLD_SIZE} ranks, got {world_size}")
    endpoint = ""
    if raw.get("rendezvous_endpoint") is not None:
        endpoint = _str(raw["rendezvous_endpoint"], "rendezvous_endpoint", problems)
        if endpoint and (why := validate_endpoint(endpoint)):
            problems.append(why)

    batch_size = DEFAULT_BATCH_SIZE
    if raw.get("batch_size") not in (None, ""):
        batch_size = _int(raw["batch_size"], "batch_size", problems) or DEFAULT_BATCH_SIZE
    file_limit = None
    if raw.get("file_limit") not in (None, "", 0, "0"):
        file_limit = _int(raw["file_limit"], "file_limit", problems)
    object_type = "folder"
    if raw.get("object_type") not in (None, ""):
        object_type = _str(raw["object_type"], "object_type", problems).lower()
        if object_type not in ("folder", "file"):
            problems.append(f"object_type: expected 'folder' or 'file', got {object_type!r}")
    s3_object_name = ""
    if raw.get("S3_object_name") is not None:
        s3_object_name = _str(raw["S3_object_name"], "S3_object_name", problems, allow_empty=True)
    script = ""
    if raw.get("script") is not None:
        script = _str(raw["script"], "script", problems, allow_empty=True)
    max_concurrency = world_size or 0
    if raw.get("max_concurrency") not in (None, "", 0, "0"):
        given = _int(raw["max_concurrency"], "max_concurrency", problems)
        if given is not None and world_size is not None and given < world_size:
            problems.append(
                f"max_concurrency: {given} is below world_size {world_size}; a Map that "
                "runs fewer ranks than the world size deadlocks every collective "
                "(omit it to use world_size)"
            )
        elif given is not None:
            max_concurrency = given
    timeout = DEFAULT_TIMEOUT_S
    if raw.get("timeout") not in (None, ""):
        try:
            timeout = float(raw["timeout"])
            if timeout <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(
                f"timeout: expected a positive number of seconds, got {raw['timeout']!r}"
            )
    run_id = ""
    if raw.get("run_id") not in (None, ""):
        run_id = _str(raw["run_id"], "run_id", problems)
        if run_id and not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", run_id):
            problems.append(f"run_id: use letters, digits, '.', '_' or '-' (got {run_id!r})")

    comm_name = ""
    if raw.get("comm_name") not in (None, ""):
        comm_name = _str(raw["comm_name"], "comm_name", problems)
        if comm_name and not re.fullmatch(r"[A-Za-z0-9._-]{1,80}", comm_name):
            problems.append(f"comm_name: use letters, digits, '.', '_' or '-' (got {comm_name!r})")

    relay = DEFAULT_RELAY
    if raw.get("relay") not in (None, ""):
        relay = raw["relay"].strip() if isinstance(raw["relay"], str) else raw["relay"]
        if why := validate_relay(relay, "relay"):
            problems.append(why)

    if problems:
        raise PayloadError(problems)
    assert world_size is not None
    run_id = run_id or uuid.uuid4().hex[:12]
    return Payload(
        bucket=bucket,
        data_bucket=data_bucket,
        data_prefix=data_prefix,
        result_path=result_path,
        world_size=world_size,
        rendezvous_endpoint=endpoint,
        batch_size=batch_size,
        file_limit=file_limit,
        object_type=object_type,
        s3_object_name=s3_object_name,
        script=script,
        max_concurrency=max_concurrency,
        timeout=timeout,
        run_id=run_id,
        comm_name=comm_name or f"pipeline-{run_id}",
        relay=relay,
    )


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``2.pt`` before ``10.pt``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(name)]


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def assign_files(files: Sequence[str], world_size: int) -> list[list[str]]:
    """Contiguous, balanced blocks of files per rank; ranks beyond the files get none.

    Contiguous blocks keep each rank's files in natural order; sizes differ by at most one.
    """
    base, extra = divmod(len(files), world_size)
    out: list[list[str]] = []
    start = 0
    for rank in range(world_size):
        size = base + (1 if rank < extra else 0)
        out.append(list(files[start : start + size]))
        start += size
    return out


def data_path_field(keys: list[str]) -> str | list[str] | None:
    """The users' DATA_PATH: one key, a list of keys, or null for a rank without data."""
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else keys


def data_path_keys(value: Any) -> list[str]:
    """Inverse of ``data_path_field``."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def build_items(payload: Payload, files: Sequence[str]) -> list[dict[str, Any]]:
    """One Map item per rank, in the users' item format plus the rendezvous fields."""
    items = []
    for rank, keys in enumerate(assign_files(files, payload.world_size)):
        items.append(
            {
                "S3_BUCKET": payload.bucket,
                "S3_OBJECT_NAME": payload.s3_object_name,
                "SCRIPT": payload.script,
                "S3_OBJECT_TYPE": payload.object_type,
                "WORLD_SIZE": payload.world_size,
                "RANK": rank,
                "DATA_BUCKET": payload.data_bucket,
                "DATA_PREFIX": payload.data_prefix,
                "DATA_PATH": data_path_field(keys),
                "RESULT_PATH": payload.result_path,
                "BATCH_SIZE": payload.batch_size,
                "RENDEZVOUS_ENDPOINT": payload.rendezvous_endpoint,
                "COMM_NAME": payload.comm_name or f"pipeline-{payload.run_id}",
                "RUN_ID": payload.run_id,
                "TIMEOUT": payload.timeout,
                "RELAY": payload.relay,
            }
        )
    return items


def log_run(run_id: Any, what: str, context: Any) -> None:
    """One log line tying this Lambda request to the run (``pipeline report`` reads it)."""
    request_id = getattr(context, "aws_request_id", None)
    if request_id:
        print(f"PIPELINE_RUN {run_id} {what} RequestId: {request_id}", flush=True)


def validate_item(item: Any) -> dict[str, Any]:
    """Check a Map item before a worker touches data, listing every problem."""
    if not isinstance(item, dict):
        raise PayloadError([f"Map item must be a JSON object, got {type(item).__name__}"])
    problems: list[str] = []
    for key in (*ITEM_FIELDS, "RENDEZVOUS_ENDPOINT", "COMM_NAME"):
        if key not in item:
            problems.append(f"missing item field {key!r}")
    if problems:
        raise PayloadError(problems)
    out = dict(item)
    out["WORLD_SIZE"] = _int(item["WORLD_SIZE"], "WORLD_SIZE", problems)
    out["RANK"] = _int(item["RANK"], "RANK", problems, minimum=0)
    out["BATCH_SIZE"] = _int(item["BATCH_SIZE"], "BATCH_SIZE", problems)
    ws, rank = out["WORLD_SIZE"], out["RANK"]
    if ws is not None and rank is not None and rank >= ws:
        problems.append(f"RANK {rank} is not below WORLD_SIZE {ws}")
    if why := validate_endpoint(str(item["RENDEZVOUS_ENDPOINT"])):
        problems.append(why)
    out["RELAY"] = item.get("RELAY") or DEFAULT_RELAY  # items written before it: the default
    if why := validate_relay(out["RELAY"], "RELAY"):
        problems.append(why)
    if problems:
        raise PayloadError(problems)
    out["TIMEOUT"] = float(item.get("TIMEOUT") or DEFAULT_TIMEOUT_S)
    return out

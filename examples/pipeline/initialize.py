"""The Initialize Lambda: validate the payload, list and assign the data, hand items over.

Validation comes first and covers the whole payload, so a typo fails here with every
problem listed instead of as ``KeyError`` inside a rank after the fan-out. The Map items
are written to storage (``{result_path}/_pipeline/items.json``) and read by the
Distributed Map's ItemReader, so large world sizes do not hit the 256 KiB state payload
limit. Each run gets its own rendezvous credential and job secret
(:mod:`rendezvous_pipeline.runauth`), returned under ``auth`` for the Map's ItemSelector
to hand every rank; they are never written to ``items.json``. Handler:
``rendezvous_pipeline.initialize.handler``.
"""

from __future__ import annotations

import json
from typing import Any

from rendezvous_pipeline.payload import (
    Payload,
    build_items,
    log_run,
    natural_sorted,
    validate_payload,
)
from rendezvous_pipeline.runauth import auth_from_environment
from rendezvous_pipeline.storage import Storage, is_local, join_key, open_storage

ITEMS_NAME = "_pipeline/items.json"
MIB = 1024 * 1024


def list_data(payload: Payload, data: Storage) -> dict[str, int]:
    """The ``.pt`` keys under data_prefix with their sizes, all pages, in natural order, up
    to file_limit."""
    prefix = payload.data_prefix.lstrip("/")
    sizes = {k: v for k, v in data.sizes(prefix).items() if k.endswith(".pt")}
    keys = natural_sorted(sizes)
    if payload.file_limit is not None:
        keys = keys[: payload.file_limit]
    return {key: sizes[key] for key in keys}


def partition_mb(sizes: dict[str, int]) -> float:
    """Mean file size in MB as the users count them (their "100 MB" files hold 100 MiB)."""
    return round(sum(sizes.values()) / len(sizes) / MIB, 1)


def initialize(raw: Any, auth: dict[str, str] | None = None) -> dict[str, Any]:
    """Validate, assign, write the items; ``auth`` (default: minted as this function's
    environment says) is the run's credential and job secret, returned beside them."""
    payload = validate_payload(raw)
    data = open_storage(payload.data_bucket)
    results = open_storage(payload.bucket)
    sizes = list_data(payload, data)
    files = list(sizes)
    if not files:
        raise ValueError(
            f"no .pt files under {data.describe(payload.data_prefix)}: check data_bucket "
            "and data_prefix"
        )
    items = build_items(payload, files)
    if auth is None:
        auth = auth_from_environment(items[0]["COMM_NAME"])
    items_key = join_key(payload.result_path, ITEMS_NAME)
    results.write(items_key, json.dumps(items).encode())
    bucket = payload.bucket
    items_bucket = bucket if is_local(bucket) else bucket.removeprefix("s3://").strip("/")
    return {
        "run_id": payload.run_id,
        "world_size": payload.world_size,
        "max_concurrency": max(payload.max_concurrency, payload.world_size),
        "num_files": len(files),
        "partition_mb": partition_mb(sizes),
        "ranks_without_data": sum(1 for item in items if item["DATA_PATH"] is None),
        "items_bucket": items_bucket,
        "items_key": items_key,
        "bucket": payload.bucket,
        "result_path": payload.result_path,
        "comm_name": items[0]["COMM_NAME"],
        "auth": auth,
    }


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point: the state machine's input payload in, the Map's inputs out."""
    result = initialize(event)
    log_run(result["run_id"], "initialize", context)
    return result

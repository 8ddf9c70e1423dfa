"""The Summarize Lambda: gather the per-rank results into ``combined_data.json``.

Lists ``{result_path}/`` WITH the trailing slash (so run ``1`` never picks up run
``10``), takes the ``<rank>.json`` files directly under it, checks every rank reported,
and writes the users' combined array plus ``summary.json`` (global quality metrics,
timings, and the run figures the users' notebooks derive from the array).
Handler: ``rendezvous_pipeline.summarize.handler``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rendezvous_pipeline.payload import GLOBAL_SUMMARY, log_run
from rendezvous_pipeline.results import (
    CPU_MEMORY,
    CPU_TIME,
    THROUGHPUT,
    number,
    ours,
    run_links,
    trimmed_mean,
)
from rendezvous_pipeline.storage import join_key, open_storage, run_prefix

COMBINED = "combined_data.json"
SUMMARY = "summary.json"
_RANK_FILE = re.compile(r"(\d+)\.json")


def archive_key(prefix: str, run_id: str, name: str) -> str:
    """Where Summarize keeps this run's own copy of combined_data.json or summary.json
    (`pipeline report` reads them, so a sweep that reuses one result_path still reports
    every run)."""
    return join_key(prefix, "_pipeline", "runs", run_id, name)


def summarize(event: dict[str, Any]) -> dict[str, Any]:
    problems = [
        f"missing field {k!r}"
        for k in ("bucket", "result_path", "world_size")
        if event.get(k) in (None, "")
    ]
    if problems:
        raise ValueError("summarize input: " + "; ".join(problems))
    storage = open_storage(str(event["bucket"]))
    prefix = run_prefix(str(event["result_path"]))
    world_size = int(event["world_size"])
    by_rank: dict[int, str] = {}
    for key in storage.list(prefix):
        match = _RANK_FILE.fullmatch(key[len(prefix) :])
        if match:
            by_rank[int(match.group(1))] = key
    missing = [r for r in range(world_size) if r not in by_rank]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise RuntimeError(
            f"{len(missing)} of {world_size} ranks wrote no result under "
            f"{storage.describe(prefix)}: ranks {shown}"
        )
    combined = [json.loads(storage.read(by_rank[r])) for r in range(world_size)]
    body = json.dumps(combined, indent=2).encode()
    storage.write(prefix + COMBINED, body)

    global_metrics: dict[str, Any] | None = None
    try:
        global_metrics = json.loads(storage.read(prefix + GLOBAL_SUMMARY))
    except Exception:  # scripts write no global summary; derive what we can
        global_metrics = None
    added = [ours(r) for r in combined]
    summary = {
        "run_id": event.get("run_id"),
        "world_size": world_size,
        "partition_mb": event.get("partition_mb"),
        "ranks": len(combined),
        "num_samples": sum(int(a.get("num_samples", 0) or 0) for a in added),
        "num_batches": sum(int(number(r, "num_batches")) for r in combined),
        "max_rank_wall_seconds": max((a.get("wall_seconds") or 0.0) for a in added),
        "max_rank_inference_seconds": max((a.get("inference_seconds") or 0.0) for a in added),
        "max_rank_comm_seconds": max((a.get("comm_seconds") or 0.0) for a in added),
        **run_links(added),  # links between ranks, and how many went through the relay
        # What the users' notebooks compute from combined_data.json, per run:
        "mean_total_cpu_time (seconds)": trimmed_mean([number(r, CPU_TIME) for r in combined]),
        "sum_throughput_bps": sum(number(r, THROUGHPUT) for r in combined),
        "sum_total_cpu_memory (MB)": sum(number(r, CPU_MEMORY) for r in combined),
        "global": global_metrics,
        "combined_path": storage.describe(prefix + COMBINED),
    }
    storage.write(join_key(prefix, SUMMARY), json.dumps(summary, indent=2).encode())
    if event.get("run_id"):  # kept per run: a later run with the same result_path
        run_id = str(event["run_id"])  # overwrites the files above
        storage.write(archive_key(prefix, run_id, COMBINED), body)
        storage.write(archive_key(prefix, run_id, SUMMARY), json.dumps(summary).encode())
    return summary


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point: Initialize's output in, the run summary out."""
    log_run(event.get("run_id"), "summarize", context)
    return summarize(event)

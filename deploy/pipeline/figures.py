"""What the users plotted by hand, per run: from ``combined_data.json`` and REPORT lines.

Their notebooks read ``'total_cpu_time (seconds)'``, ``'total_cpu_memory (MB)'`` and
``'throughput_bps'`` from every per-rank object and aggregate per run: CPU time as the
mean over ranks without outliers (1.5 x IQR), memory and throughput as sums over ranks.
Then they plot those per world size, one series per partition size (25-100 MB files),
next to the cost from the Lambda REPORT lines. The same keys feed `pipeline report`, the
local sweep's table and the plots here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from examples.pipeline.payload import data_path_keys
from examples.pipeline.results import (
    CPU_MEMORY,
    CPU_TIME,
    THROUGHPUT,
    format_problems,
    number,
    trimmed_mean,
)
from examples.pipeline.storage import Storage, join_key, open_storage, run_prefix
from examples.pipeline.summarize import COMBINED, SUMMARY, archive_key

MIB = 1024 * 1024  # the users' "100 MB" partitions hold 100 MiB (5,113 samples)


@dataclass(frozen=True)
class RunFigures:
    """One run (one execution) in the users' terms; None where a figure is unknown."""

    label: str
    world_size: int
    partition_mb: float | None  # mean size of the run's .pt files
    ranks: int  # per-rank objects read
    cpu_seconds: float | None  # mean total_cpu_time (seconds) per rank, outliers dropped
    throughput_bps: float | None  # sum over ranks
    memory_mb: float | None  # sum of total_cpu_memory (MB) over ranks
    cost_usd: float | None


def partition_mb(combined: Sequence[Mapping[str, Any]], sizes: Mapping[str, int]) -> float | None:
    """Mean size in MB (MiB, as the users count) of the files the ranks' data_path names."""
    found = [sizes[k] for r in combined for k in data_path_keys(r.get("data_path")) if k in sizes]
    return round(statistics.fmean(found) / MIB, 1) if found else None


def run_figures(
    label: str,
    world_size: int,
    combined: Sequence[Mapping[str, Any]] | None,
    *,
    cost_usd: float | None = None,
    partition: float | None = None,
) -> RunFigures:
    """Aggregate one run's per-rank objects as the users' notebooks do."""
    if not combined:
        return RunFigures(label, world_size, partition, 0, None, None, None, cost_usd)
    return RunFigures(
        label=label,
        world_size=world_size,
        partition_mb=partition,
        ranks=len(combined),
        cpu_seconds=trimmed_mean([number(r, CPU_TIME) for r in combined]),
        throughput_bps=sum(number(r, THROUGHPUT) for r in combined),
        memory_mb=sum(number(r, CPU_MEMORY) for r in combined),
        cost_usd=cost_usd,
    )


def read_run(
    payload: Mapping[str, Any], run_id: str, s3: Any = None
) -> tuple[list[dict[str, Any]], str | None]:
    """(per-rank objects, None) of one execution from its payload's storage, or ([], why).
    ``s3``: the boto3 client to use (the CLI's region, profile and endpoint).

    Summarize keeps each run's copy under ``_pipeline/runs/<run_id>/``; a run summarized
    before that existed is read from ``combined_data.json`` if ``summary.json`` is its own.
    """
    try:
        results: Storage = open_storage(str(payload["bucket"]), s3)
        prefix = run_prefix(str(payload["result_path"]))
    except (KeyError, ValueError) as err:
        return [], f"no results location in the execution's input ({err})"
    try:
        combined = json.loads(results.read(archive_key(prefix, run_id)))
    except Exception:
        try:
            summary = json.loads(results.read(join_key(prefix, SUMMARY)))
            if summary.get("run_id") != run_id:
                where = results.describe(prefix)
                return [], f"{where} holds run {summary.get('run_id')}'s results, not this run's"
            combined = json.loads(results.read(join_key(prefix, COMBINED)))
        except Exception as err:
            where = results.describe(join_key(prefix, COMBINED))
            return [], f"cannot read {where} (failed or still running?): {err}"
    if not isinstance(combined, list):
        return [], f"{results.describe(prefix)}: combined_data.json is not a JSON array"
    bad = [f"rank {i}: {p[0]}" for i, r in enumerate(combined) if (p := format_problems(r))]
    if len(bad) == len(combined):
        return [], f"no per-rank object in the users' format ({bad[0]})"
    return [r for r in combined if isinstance(r, dict)], None


def data_sizes(payload: Mapping[str, Any], s3: Any = None) -> dict[str, int]:
    """Bytes of every object under the payload's data_prefix ({} when it cannot be listed)."""
    try:
        data = open_storage(str(payload.get("data_bucket") or payload["bucket"]), s3)
        return data.sizes(str(payload.get("data_prefix") or "").lstrip("/"))
    except Exception:
        return {}


COLUMNS = (
    "execution",
    "world size",
    "partition (MB)",
    "ranks",
    "total CPU time (s)",
    "throughput (Mbit/s)",
    "total CPU memory (MB)",
    "cost (USD)",
)


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def cells(row: RunFigures) -> list[str]:
    throughput = None if row.throughput_bps is None else row.throughput_bps / 1e6
    return [
        row.label,
        str(row.world_size),
        _cell(row.partition_mb, ".1f"),
        str(row.ranks),
        _cell(row.cpu_seconds, ".3f"),
        _cell(throughput, ".2f"),
        _cell(row.memory_mb, ".1f"),
        _cell(row.cost_usd, ".6f"),
    ]


def to_csv(rows: Iterable[RunFigures]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(cells(row) for row in rows)
    return buffer.getvalue()


def to_markdown(rows: Iterable[RunFigures]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def series(rows: Iterable[RunFigures]) -> dict[float | None, list[RunFigures]]:
    """Rows by partition size (one series when every run has the same), world size order."""
    groups: dict[float | None, list[RunFigures]] = {}
    for row in rows:
        groups.setdefault(row.partition_mb, []).append(row)
    return {k: sorted(v, key=lambda r: r.world_size) for k, v in groups.items()}


PANELS = (
    ("cpu_seconds", "total CPU time per rank (s)", 1.0),
    ("throughput_bps", "throughput, sum over ranks (Mbit/s)", 1e-6),
    ("cost_usd", "cost per run (USD)", 1.0),
)


def _means(rows: Sequence[RunFigures], field: str, scale: float) -> tuple[list[int], list[float]]:
    """Per world size, the mean over repeated runs of ``field`` (runs without it skipped)."""
    by_size: dict[int, list[float]] = {}
    for row in rows:
        value = getattr(row, field)
        if value is not None and math.isfinite(value):
            by_size.setdefault(row.world_size, []).append(value * scale)
    sizes = sorted(by_size)
    return sizes, [statistics.fmean(by_size[s]) for s in sizes]


def figure(rows: Sequence[RunFigures], note: str = "") -> Any:
    """Total CPU time, throughput and cost against world size, one line per partition
    size when the runs differ in it; units on every axis; ``note`` (e.g. the pricing)
    printed at the bottom. A matplotlib Figure (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = series(rows)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 4))
    for axis, (field, ylabel, scale) in zip(axes, PANELS, strict=True):
        for partition, members in sorted(groups.items(), key=lambda kv: kv[0] or 0.0):
            sizes, values = _means(members, field, scale)
            label = "partition size unknown" if partition is None else f"{partition:g} MB files"
            axis.plot(sizes, values, "o-", label=label if len(groups) > 1 else None)
        axis.set_xlabel("world size (ranks)")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if len(groups) > 1:
            axis.legend(fontsize=7)
    fig.suptitle("Inference pipeline per world size", fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot(rows: Sequence[RunFigures], path: Path, note: str = "") -> Path:
    """:func:`figure` written to ``path`` as PNG."""
    fig = figure(rows, note)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

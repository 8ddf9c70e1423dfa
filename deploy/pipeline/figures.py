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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rendezvous_pipeline.results import (
    CPU_MEMORY,
    CPU_TIME,
    THROUGHPUT,
    format_problems,
    number,
    trimmed_mean,
)
from rendezvous_pipeline.storage import is_local, open_storage, run_prefix
from rendezvous_pipeline.summarize import COMBINED, SUMMARY, archive_key


@dataclass(frozen=True)
class RunFigures:
    """One run (one execution) in the users' terms; None where a figure is unknown."""

    label: str
    world_size: int
    partition_mb: float | None  # mean size of the run's .pt files (MiB, the users' MB)
    ranks: int  # per-rank objects read
    cpu_seconds: float | None  # mean total_cpu_time (seconds) per rank, outliers dropped
    throughput_bps: float | None  # sum over ranks
    memory_mb: float | None  # sum of total_cpu_memory (MB) over ranks
    cost_usd: float | None
    # (rank, what is wrong) of the objects not in the users' format: left out of every
    # figure above, which would otherwise take their missing numbers as 0
    left_out: tuple[tuple[int, str], ...] = ()

    def left_out_text(self) -> str:
        """The ranks left out and why, for a warning line ("" when none)."""
        return "; ".join(f"rank {rank}: {why}" for rank, why in self.left_out)


def run_figures(
    label: str,
    world_size: int,
    combined: Sequence[Mapping[str, Any]] | None,
    *,
    cost_usd: float | None = None,
    partition: float | None = None,
) -> RunFigures:
    """Aggregate one run's per-rank objects as the users' notebooks do; objects not in
    their format (by position, the rank) are left out and listed in ``left_out``."""
    if not combined:
        return RunFigures(label, world_size, partition, 0, None, None, None, cost_usd)
    left_out = tuple(
        (rank, "; ".join(problems))
        for rank, record in enumerate(combined)
        if (problems := format_problems(record))
    )
    bad = {rank for rank, _ in left_out}
    good = [record for rank, record in enumerate(combined) if rank not in bad]
    return RunFigures(
        label=label,
        world_size=world_size,
        partition_mb=partition,
        ranks=len(combined),
        cpu_seconds=trimmed_mean([number(r, CPU_TIME) for r in good]) if good else None,
        throughput_bps=sum(number(r, THROUGHPUT) for r in good) if good else None,
        memory_mb=sum(number(r, CPU_MEMORY) for r in good) if good else None,
        cost_usd=cost_usd,
        left_out=left_out,
    )


def _reader(bucket: str, aws: Any) -> tuple[Callable[[str], bytes], Callable[[str], str]]:
    """(read key, describe key) for a payload's ``bucket``: S3 through the CLI's client
    (its region, profile and endpoint), or a local directory."""
    if is_local(bucket):
        local = open_storage(bucket)
        return local.read, local.describe
    s3 = aws.client("s3")
    name = bucket.removeprefix("s3://").strip("/")

    def read(key: str) -> bytes:
        return bytes(s3.get_object(Bucket=name, Key=key)["Body"].read())

    return read, lambda key: f"s3://{name}/{key}"


def read_run(
    payload: Mapping[str, Any], run_id: str, aws: Any = None
) -> tuple[list[Any], float | None, str | None]:
    """(per-rank objects, partition MB, None) of one execution, or ([], None, why).

    The objects come in rank order, malformed ones included (``run_figures`` leaves them
    out of the figures and names them); ``why`` when not one is in the users' format.

    Reads the copies Summarize keeps per run under ``{result_path}/_pipeline/runs/<run_id>/``
    (all the deployer's policy lets `pipeline report` read), not the result_path's own
    files, which a later run with the same result_path overwrites.
    """
    try:
        read, describe = _reader(str(payload["bucket"]), aws)
        prefix = run_prefix(str(payload["result_path"]))
    except (KeyError, ValueError) as err:
        return [], None, f"no results location in the execution's input ({err})"
    key = archive_key(prefix, run_id, COMBINED)
    try:
        combined = json.loads(read(key))
    except Exception as err:
        return [], None, f"cannot read {describe(key)} (failed or still running?): {err}"
    if not isinstance(combined, list):
        return [], None, f"{describe(key)} is not a JSON array"
    bad = [f"rank {i}: {p[0]}" for i, r in enumerate(combined) if (p := format_problems(r))]
    if len(bad) == len(combined):
        return [], None, f"no per-rank object in the users' format ({bad[0]})"
    try:
        summary = json.loads(read(archive_key(prefix, run_id, SUMMARY)))
        partition = float(summary["partition_mb"])
    except Exception:  # summarized without it: the partition size stays unknown
        partition = None
    return combined, partition, None


COLUMNS = (
    "execution",
    "world size",
    "partition (MB)",
    "ranks",
    "total CPU time (s)",
    "throughput (Mbit/s)",
    "total CPU memory (MB)",
    "cost (USD)",
    "ranks left out",
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
        " ".join(str(rank) for rank, _ in row.left_out) or "none",
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

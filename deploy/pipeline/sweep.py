"""The local sweep's table, CSV and plot (one row per world size)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from rendezvous_deploy.pipeline.figures import run_figures
from rendezvous_deploy.pipeline.local import LocalRun

COLUMNS = (
    "world size",
    "wall (s)",
    "per rank (s)",
    "samples/s",
    "MAE",
    "comm (s)",
    "comm share",
    "relayed links",
    "total CPU time (s)",
    "throughput (Mbit/s)",
)


def sweep_rows(runs: Sequence[LocalRun]) -> tuple[tuple[str, ...], list[list[str]]]:
    """Cells for each run: wall = Initialize to Summarize; per-rank = slowest handler;
    samples/s = all samples over the slowest rank's inference time; comm = rendezvous and
    collectives on the critical path (waiting for late peers excluded), and its share of
    the slowest rank's time; relayed links = links between ranks that went through the
    server's relay (0: all punched); total CPU time and throughput from the users'
    per-rank keys, aggregated as their notebooks do (figures.py)."""
    rows = []
    for run in runs:
        mae = run.mae
        users = run_figures(str(run.world_size), run.world_size, run.combined)
        rows.append(
            [
                str(run.world_size),
                f"{run.wall_seconds:.2f}",
                f"{run.max_rank_seconds:.2f}",
                f"{run.samples_per_second:.0f}",
                "n/a" if mae is None else f"{mae:.4f}",
                f"{run.comm_seconds:.3f}",
                f"{100 * run.comm_share:.1f}%",
                str(run.relayed_links),
                f"{users.cpu_seconds or 0.0:.3f}",
                f"{(users.throughput_bps or 0.0) / 1e6:.2f}",
            ]
        )
    return COLUMNS, rows


def write_sweep(runs: Sequence[LocalRun], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns, rows = sweep_rows(runs)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def plot_sweep(runs: Sequence[LocalRun], path: Path) -> Path:
    """Wall time and throughput against world size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(runs, key=lambda r: r.world_size)
    sizes = [r.world_size for r in ordered]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(sizes, [r.wall_seconds for r in ordered], "o-", label="wall time (s)")
    left.plot(sizes, [r.max_rank_seconds for r in ordered], "^-", label="per-rank time (s)")
    left.set_xlabel("world size")
    left.set_ylabel("seconds")
    left.set_xticks(sizes)
    right = left.twinx()
    right.plot(
        sizes, [r.samples_per_second for r in ordered], "s--", color="tab:green", label="samples/s"
    )
    right.set_ylabel("samples/s")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    left.set_title("Inference pipeline, local processes", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""The users' per-run figures from combined_data.json, and the plot of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rendezvous_deploy.pipeline.figures import (
    RunFigures,
    figure,
    plot,
    read_run,
    run_figures,
    to_csv,
    to_markdown,
)
from rendezvous_pipeline.results import format_problems, trimmed_mean, users_record
from rendezvous_pipeline.summarize import summarize
from tests.pipeline.users_format import USERS_RESULT, assert_users_format


def users_remove_outliers_and_mean(data, threshold=1.5):
    """The users' notebook function, as they wrote it (numpy percentiles)."""
    q1 = np.percentile(data, 25)
    q3 = np.percentile(data, 75)
    iqr = q3 - q1
    lower_bound = q1 - threshold * iqr
    upper_bound = q3 + threshold * iqr
    return np.mean([x for x in data if lower_bound <= x <= upper_bound])


@pytest.mark.parametrize(
    "values",
    [[1.0], [2.0, 4.0], [5.0, 5.1, 4.9, 5.2, 40.0], [1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 2.5]],
)
def test_trimmed_mean_is_the_users_outlier_mean(values: list[float]) -> None:
    assert trimmed_mean(values) == pytest.approx(users_remove_outliers_and_mean(values))


def test_users_record_has_their_keys_and_types() -> None:
    record = users_record(
        cpu_seconds=2.0,
        memory_mb=300.0,
        inference_seconds=4.0,
        num_batches=2,
        batch_size=512,
        data_bits=8e6,
        num_samples=1000,
        result_path="runs/1",
        data_path="parts/1.pt",
    )
    assert_users_format(record, ours=None)
    assert list(record) == list(USERS_RESULT)  # their order too
    assert record["execution_time (seconds/batch)"] == 2.0
    assert record["throughput_bps"] == 2e6 and record["sample_persec"] == 250.0
    idle = users_record(
        cpu_seconds=0,
        memory_mb=100,
        inference_seconds=0,
        num_batches=0,
        batch_size=512,
        data_bits=0,
        num_samples=0,
        result_path="runs/1",
        data_path=None,
    )
    assert_users_format(idle, ours=None)
    assert format_problems(USERS_RESULT) == []
    assert format_problems({**USERS_RESULT, "total_cpu_time": 1.0}) == [
        "unexpected key 'total_cpu_time' (ours go under 'rendezvous')"
    ]
    assert format_problems({**USERS_RESULT, "num_batches": 2.0}) == [
        "'num_batches' should be int, got 2.0"
    ]


def rank(cpu: float, bps: float, mem: float, data_path: object) -> dict:
    return {
        **USERS_RESULT,
        "total_cpu_time (seconds)": cpu,
        "throughput_bps": bps,
        "total_cpu_memory (MB)": mem,
        "data_path": data_path,
    }


def test_run_figures_aggregate_as_the_notebooks() -> None:
    combined = [
        rank(10.0, 1e6, 100.0, "p/1.pt"),
        rank(12.0, 2e6, 110.0, ["p/2.pt", "p/3.pt"]),
        rank(11.0, 3e6, 120.0, None),
        rank(300.0, 4e6, 130.0, "p/4.pt"),
    ]
    row = run_figures("r1", 4, combined, cost_usd=0.5, partition=25.0)
    # the 300 s rank is an outlier (beyond 1.5 IQR) and left out of the mean, as theirs
    assert row.cpu_seconds == pytest.approx(11.0)
    assert row.throughput_bps == pytest.approx(1e7) and row.memory_mb == pytest.approx(460.0)
    assert row.cost_usd == 0.5 and row.ranks == 4
    empty = run_figures("r2", 8, None, cost_usd=0.1)
    assert (empty.cpu_seconds, empty.throughput_bps, empty.cost_usd) == (None, None, 0.1)
    lines = to_csv([row, empty]).splitlines()
    assert lines[0] == (
        "execution,world size,partition (MB),ranks,total CPU time (s),"
        "throughput (Mbit/s),total CPU memory (MB),cost (USD),ranks left out"
    )
    assert lines[1] == "r1,4,25.0,4,11.000,10.00,460.0,0.500000,none"
    assert lines[2] == "r2,8,n/a,0,n/a,n/a,n/a,0.100000,none"


def test_a_malformed_rank_is_left_out_of_the_figures_and_named() -> None:
    """A rank whose CPU time key was renamed must not count as 0 s, 0 bps, 0 MB."""
    combined = [rank(10.0, 1e6, 100.0, "p/1.pt"), rank(12.0, 2e6, 110.0, "p/2.pt")]
    broken = rank(11.0, 3e6, 120.0, "p/3.pt")
    broken["total_cpu_time"] = broken.pop("total_cpu_time (seconds)")
    combined.insert(1, broken)
    row = run_figures("r1", 3, combined, cost_usd=0.5)
    assert row.ranks == 3 and [r for r, _ in row.left_out] == [1]
    assert row.cpu_seconds == pytest.approx(11.0)  # (10 + 12) / 2, not (10 + 0 + 12) / 3
    assert row.throughput_bps == pytest.approx(3e6) and row.memory_mb == pytest.approx(210.0)
    assert "rank 1: missing key 'total_cpu_time (seconds)'" in row.left_out_text()
    assert to_csv([row]).splitlines()[1] == "r1,3,n/a,3,11.000,3.00,210.0,0.500000,1"
    assert to_markdown([row]).splitlines()[2].endswith("| 1 |")
    none_good = run_figures("r2", 1, [broken])
    assert (none_good.cpu_seconds, none_good.throughput_bps, none_good.memory_mb) == (
        None,
        None,
        None,
    )


def test_read_run_keeps_malformed_ranks_in_place(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    for r, cpu in enumerate((1.0, 2.0, 3.0)):
        path = bucket / "runs" / "x" / f"{r}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = rank(cpu, 1.0, 1.0, f"parts/{r}.pt")
        if r == 2:
            record["total_cpu_time"] = record.pop("total_cpu_time (seconds)")
        path.write_text(json.dumps(record))
    event = {"bucket": str(bucket), "result_path": "runs/x", "world_size": 3, "run_id": "ws3"}
    summarize(event)
    combined, _, why = read_run({"bucket": str(bucket), "result_path": "runs/x"}, "ws3")
    assert why is None and len(combined) == 3
    row = run_figures("ws3", 3, combined)
    assert [r for r, _ in row.left_out] == [2] and row.cpu_seconds == pytest.approx(1.5)


def test_plot_per_world_size_and_partition_with_units(tmp_path: Path) -> None:
    rows = [
        RunFigures(f"{p}-{ws}", ws, p, ws, 10.0 * p / ws, 1e6 * ws, 100.0, 0.01 * ws)
        for p in (25.0, 100.0)
        for ws in (2, 4, 8)
    ]
    rows.append(RunFigures("repeat", 2, 25.0, 2, 7.5, 3e6, 100.0, 0.04))  # mean with 25-2
    fig = figure(rows, "note")
    labels = [(axis.get_xlabel(), axis.get_ylabel()) for axis in fig.axes]
    assert labels == [
        ("world size (ranks)", "total CPU time per rank (s)"),
        ("world size (ranks)", "throughput, sum over ranks (Mbit/s)"),
        ("world size (ranks)", "cost per run (USD)"),
    ]
    cpu_axis = fig.axes[0]
    assert [line.get_label() for line in cpu_axis.get_lines()] == ["25 MB files", "100 MB files"]
    first = cpu_axis.get_lines()[0]
    assert list(first.get_xdata()) == [2, 4, 8]
    assert list(first.get_ydata()) == pytest.approx([(125.0 + 7.5) / 2, 62.5, 31.25])
    throughput = fig.axes[1].get_lines()[1]
    assert list(throughput.get_ydata()) == pytest.approx([2.0, 4.0, 8.0])  # Mbit/s
    one = figure([r for r in rows if r.partition_mb == 25.0])
    assert len(one.axes[0].get_lines()) == 1 and one.axes[0].get_legend() is None
    png = plot(rows, tmp_path / "out" / "runs.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_run_reads_each_runs_own_copy(tmp_path: Path) -> None:
    """A later run with the same result_path overwrites combined_data.json; each run's
    copy under _pipeline/runs/<run_id>/ is what `pipeline report` reads."""
    bucket = tmp_path / "bucket"
    for run_id, cpu in (("ws2-a", 1.0), ("ws3-b", 2.0)):
        size = int(run_id[2])
        for r in range(size):
            path = bucket / "runs" / "x" / f"{r}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rank(cpu, 1.0, 1.0, f"parts/{r}.pt")))
        event = {
            "bucket": str(bucket),
            "result_path": "runs/x",
            "world_size": size,
            "run_id": run_id,
            "partition_mb": 12.5 * size,
        }
        summarize(event)
    payload = {"bucket": str(bucket), "result_path": "runs/x"}
    first, partition, why = read_run(payload, "ws2-a")
    assert why is None and [r["total_cpu_time (seconds)"] for r in first] == [1.0, 1.0]
    assert partition == 25.0
    second, partition, why = read_run(payload, "ws3-b")
    assert why is None and len(second) == 3 and partition == 37.5
    latest = json.loads((bucket / "runs/x/combined_data.json").read_text())
    assert latest == second  # the users' own file holds the last run
    (bucket / "runs/x/_pipeline/runs/ws2-a/combined_data.json").unlink()
    gone, partition, why = read_run(payload, "ws2-a")
    assert gone == [] and partition is None
    assert why is not None and why.startswith("cannot read ") and "ws2-a" in why
    bad = bucket / "runs/x/_pipeline/runs/ws3-b/combined_data.json"
    bad.write_text(json.dumps([{"rank": 0}]))
    assert read_run(payload, "ws3-b")[2] == (
        "no per-rank object in the users' format (rank 0: missing key 'total_cpu_time (seconds)')"
    )

"""The pipeline end to end on this machine: real processes, real rendezvous, real fmi_client.

Global metrics are checked against values computed directly from the data and the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rendezvous_pipeline.results import format_problems
from tests.pipeline.conftest import need_torch
from tests.pipeline.users_format import assert_users_format

NAT_LABELS = {"unknown", "endpoint-independent", "port-dependent", "no-inbound"}


def direct_metrics(data_dir: Path) -> dict[str, float]:
    """MAE, MSE, bias over every partition, computed here without the pipeline."""
    import torch

    from rendezvous_pipeline.data import load_partition
    from rendezvous_pipeline.model import load_model

    model = load_model()
    preds, trues = [], []
    for name in ("1.pt", "2.pt", "10.pt"):
        image, magnitude, z = load_partition((data_dir / "parts" / name).read_bytes()).tensors
        with torch.inference_mode():
            preds.append(model(image, magnitude).double().numpy())
        trues.append(z.double().numpy())
    err = np.concatenate(preds) - np.concatenate(trues)
    return {
        "count": err.size,
        "mae": np.abs(err).mean(),
        "mse": (err**2).mean(),
        "bias": err.mean(),
    }


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize(
    ("world_size", "expected_paths"),
    [
        (1, [["parts/1.pt", "parts/2.pt", "parts/10.pt"]]),
        (3, ["parts/1.pt", "parts/2.pt", "parts/10.pt"]),
        (4, ["parts/1.pt", "parts/2.pt", "parts/10.pt", None]),  # rank 3 has no data
    ],
)
def test_local_run(
    world_size: int, expected_paths: list, tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    need_torch()
    from rendezvous_deploy.pipeline.local import run_local

    run = run_local(
        data_dir=tiny_data,
        results_dir=tmp_path / "results",
        world_size=world_size,
        endpoint=endpoint,
        batch_size=16,
        data_prefix="parts/",
        timeout=240,
        cpus=2,
    )
    direct = direct_metrics(tiny_data)
    run_dir = run.results_dir

    per_rank = [json.loads((run_dir / f"{r}.json").read_text()) for r in range(world_size)]
    ours = [result["rendezvous"] for result in per_rank]
    for rank, result in enumerate(per_rank):
        assert_users_format(result)
        assert format_problems(result) == []
        assert ours[rank]["rank"] == rank
        assert result["data_path"] == expected_paths[rank]
        assert result["batch_size"] == 16
        assert result["device"] == "cpu"
        assert result["result_path"] == f"runs/{run_dir.name}"  # the run's prefix, as theirs
        assert ours[rank]["result_file"] == str(run_dir / f"{rank}.json")
        # every rank learnt the same global figures through the allreduce
        assert ours[rank]["global"]["count"] == direct["count"] == 120
        assert ours[rank]["global"]["mae"] == pytest.approx(direct["mae"], rel=1e-4)
        assert ours[rank]["global"]["mse"] == pytest.approx(direct["mse"], rel=1e-4)
        assert ours[rank]["global"]["bias"] == pytest.approx(direct["bias"], rel=1e-3, abs=1e-6)
        samples = ours[rank]["num_samples"]
        if samples:  # rates over the rank's inference time; 40 samples of 5x32x32+5 floats
            seconds = ours[rank]["inference_seconds"]
            assert result["sample_persec"] == pytest.approx(samples / seconds)
            assert result["throughput_bps"] == pytest.approx(samples * 5125 * 32 / seconds)
            assert result["execution_time (seconds/batch)"] == pytest.approx(
                seconds / result["num_batches"]
            )
            assert result["total_cpu_time (seconds)"] > 0
        else:
            assert result["throughput_bps"] == result["sample_persec"] == 0.0
        # relay "auto" on loopback: every link this rank made was punched
        assert ours[rank]["relay"] == "auto"
        assert {link["path"] for link in ours[rank]["links"]} <= {"direct"}
        assert ours[rank]["relayed_links"] == 0
        assert ours[rank]["direct_links"] == len(ours[rank]["links"]) <= world_size - 1
    assert sum(o["num_samples"] for o in ours) == 120
    batches = [r["num_batches"] for r in per_rank]
    assert batches == [
        3 * len(p) if isinstance(p, list) else (3 if p else 0) for p in expected_paths
    ]  # 40 samples in batches of 16: 3 each
    if world_size == 4:
        assert ours[3]["num_samples"] == 0 and ours[3]["mae"] is None

    combined = json.loads((run_dir / "combined_data.json").read_text())
    assert combined == per_rank
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_samples"] == 120
    assert summary["relayed_links"] == 0
    pairs = {(min(o["rank"], link["peer"]), max(o["rank"], link["peer"]))
             for o in ours for link in o["links"]}  # each link is in both ranks' lists
    assert summary["links"] == len(pairs) >= world_size - 1
    size = sum((tiny_data / "parts" / n).stat().st_size for n in ("1.pt", "2.pt", "10.pt"))
    assert summary["partition_mb"] == round(size / 3 / 2**20, 1)  # mean file size, MiB
    kept = run_dir / "_pipeline" / "runs" / summary["run_id"]
    assert json.loads((kept / "combined_data.json").read_text()) == per_rank
    assert json.loads((kept / "summary.json").read_text()) == summary
    assert summary["sum_throughput_bps"] == pytest.approx(
        sum(r["throughput_bps"] for r in per_rank)
    )
    assert summary["global"]["mae"] == pytest.approx(direct["mae"], rel=1e-4)
    rank0_global = json.loads((run_dir / "global.json").read_text())
    assert rank0_global == ours[0]["global"]
    assert run.mae == pytest.approx(direct["mae"], rel=1e-4)
    assert direct["mae"] < 0.1  # the shipped weights learnt the relation
    assert not (run_dir / "_pipeline" / "items.json").read_text().startswith("{")


@pytest.mark.torch
def test_relay_always_puts_each_ranks_relayed_links_in_its_result(
    tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    """The payload's relay "always": every link goes through the server's relay, each
    rank's result says so under "rendezvous" only, the summary counts them."""
    need_torch()
    from rendezvous_deploy.pipeline.local import run_local
    from rendezvous_deploy.pipeline.sweep import sweep_rows

    run = run_local(data_dir=tiny_data, results_dir=tmp_path / "results", world_size=3,
                    endpoint=endpoint, batch_size=16, data_prefix="parts/", timeout=240,
                    cpus=2, relay="always")
    per_rank = [json.loads((run.results_dir / f"{r}.json").read_text()) for r in range(3)]
    pairs = set()
    for rank, result in enumerate(per_rank):
        assert_users_format(result)  # the users' ten keys, as they were
        assert format_problems(result) == []
        ours = result["rendezvous"]
        assert ours["relay"] == "always"
        assert ours["links"], f"rank {rank} reported no link"
        for link in ours["links"]:
            assert set(link) == {"peer", "path", "pairings", "punch_failures", "stalls", "nat",
                                 "peer_nat", "why"}
            assert link["path"] == "relay" and link["peer"] != rank
            assert link["why"] == "relay='always'"  # why it took that path
            assert link["nat"] in NAT_LABELS and link["peer_nat"] in NAT_LABELS
            assert link["pairings"] == 1 and link["punch_failures"] == link["stalls"] == 0
            pairs.add((min(rank, link["peer"]), max(rank, link["peer"])))
        assert [link["peer"] for link in ours["links"]] == sorted(
            link["peer"] for link in ours["links"])
        assert ours["relayed_links"] == len(ours["links"]) and ours["direct_links"] == 0
    summary = json.loads((run.results_dir / "summary.json").read_text())
    assert summary["relayed_links"] == summary["links"] == len(pairs) >= 2
    assert run.relayed_links == len(pairs)
    columns, rows = sweep_rows([run])
    assert rows[0][columns.index("relayed links")] == str(len(pairs))


@pytest.mark.torch
def test_a_failing_rank_fails_the_run_with_its_message(
    tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    need_torch()
    from rendezvous_deploy.pipeline.local import PipelineFailed, run_local

    data = tmp_path / "data"
    (data / "parts").mkdir(parents=True)
    for name in ("1.pt", "2.pt"):
        (data / "parts" / name).write_bytes((tiny_data / "parts" / name).read_bytes())
    (data / "parts" / "3.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(PipelineFailed) as info:
        run_local(
            data_dir=data,
            results_dir=tmp_path / "results",
            world_size=3,
            endpoint=endpoint,
            data_prefix="parts/",
            timeout=120,
            cpus=2,
        )
    message = str(info.value)
    assert message.startswith("rank 2/3 failed: cannot load ")
    assert "parts/3.pt" in message


SCRIPT_OK = """
import json, os, pathlib
rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
out = pathlib.Path(os.environ["S3_BUCKET"]) / os.environ["RESULT_PATH"] / f"{rank}.json"
out.write_text(json.dumps({"rank": rank, "world_size": size,
                           "data_path": json.loads(os.environ["DATA_PATH"])}))
"""

SCRIPT_FAILS_ON_RANK_1 = """
import os, sys
if os.environ["RANK"] == "1":
    print("out of cheese", file=sys.stderr)
    sys.exit(3)
"""


def test_user_script_gets_rank_and_world_size(
    tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    from rendezvous_deploy.pipeline.local import run_local

    script = tmp_path / "infer.py"
    script.write_text(SCRIPT_OK)
    run = run_local(
        data_dir=tiny_data,
        results_dir=tmp_path / "results",
        world_size=2,
        endpoint=endpoint,
        data_prefix="parts/",
        script=script,
        timeout=120,
    )
    combined = json.loads((run.results_dir / "combined_data.json").read_text())
    assert combined == [
        {"rank": 0, "world_size": 2, "data_path": ["parts/1.pt", "parts/2.pt"]},
        {"rank": 1, "world_size": 2, "data_path": ["parts/10.pt"]},
    ]


def test_user_script_exit_code_is_honoured(tiny_data: Path, endpoint: str, tmp_path: Path) -> None:
    from rendezvous_deploy.pipeline.local import PipelineFailed, run_local

    script = tmp_path / "infer.py"
    script.write_text(SCRIPT_FAILS_ON_RANK_1)
    with pytest.raises(
        PipelineFailed,
        match=r"rank 1/2: script .*infer.py exited with "
        r"status 3: out of cheese",
    ):
        run_local(
            data_dir=tiny_data,
            results_dir=tmp_path / "results",
            world_size=2,
            endpoint=endpoint,
            data_prefix="parts/",
            script=script,
            timeout=120,
        )


@pytest.mark.torch
@pytest.mark.slow
def test_cli_sweep_prints_table_csv_and_plot(tmp_path: Path, monkeypatch) -> None:
    """`pipeline generate` then `pipeline run --local` (what `make demo` runs)."""
    need_torch()
    import csv

    from click.testing import CliRunner

    from rendezvous_deploy.cli import main

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(
        main,
        ["pipeline", "generate", "data", "--files", "3", "--samples", "32"],
        catch_exceptions=False,
    )
    assert made.exit_code == 0, made.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["1.pt", "2.pt", "3.pt"]
    from rendezvous_pipeline.model import WEIGHTS

    own_model = tmp_path / "my-model.pt"  # a user's file: here a copy of the shipped one
    own_model.write_bytes(WEIGHTS.read_bytes())
    result = runner.invoke(
        main,
        [
            "pipeline",
            "run",
            "--local",
            "--world-size",
            "1,2",
            "--data",
            "data",
            "--results",
            "out",
            "--model",
            str(own_model),
        ],
        catch_exceptions=False,
        env={"COLUMNS": "80"},
    )  # not a terminal
    assert result.exit_code == 0, result.output
    assert "(96 samples)" in result.output
    assert result.output.strip().endswith("out/sweep.png")
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert [r["world size"] for r in rows] == ["1", "2"]
    assert len({r["MAE"] for r in rows}) == 1  # same data, same model, same global MAE
    assert float(rows[0]["MAE"]) < 0.1
    for row in rows:  # the users' figures, from each run's combined_data.json
        assert float(row["total CPU time (s)"]) > 0 and float(row["throughput (Mbit/s)"]) > 0
    printed = [line for line in result.output.splitlines() if line.startswith("│ ")]
    assert len(printed) == len(rows)  # in a pipe the table is whole, not cut at COLUMNS
    for line, row in zip(printed, rows, strict=True):
        assert [cell.strip() for cell in line.strip("│").split("│")] == list(row.values())
    items = json.loads(
        next((tmp_path / "out" / "runs").glob("ws1-*/_pipeline/items.json")).read_text()
    )
    assert items[0]["S3_OBJECT_NAME"].endswith("/my-model.pt")
    assert items[0]["S3_OBJECT_TYPE"] == "file"

    missing = runner.invoke(main, ["pipeline", "run", "--local"])
    assert missing.exit_code == 2 and "--local needs --data DIR" in missing.output
    bad = runner.invoke(
        main, ["pipeline", "run", "--local", "--data", "data", "--world-size", "2,x"]
    )
    assert bad.exit_code == 2 and "'x' is not a positive integer" in bad.output


def test_run_help_names_every_column_of_the_local_table() -> None:
    from click.testing import CliRunner

    from rendezvous_deploy.cli import main
    from rendezvous_deploy.pipeline.sweep import COLUMNS

    shown = CliRunner().invoke(main, ["pipeline", "run", "--help"], env={"COLUMNS": "200"})
    text = " ".join(shown.output.split())
    assert shown.exit_code == 0
    assert [column for column in COLUMNS if column not in text] == []


SCRIPT_REPORTS_LINKS = """
import json, os, pathlib
import fmi
rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
config = os.environ["FMI_CONFIG"]
comm = fmi.Communicator(rank, size, config, os.environ["COMM_NAME"], 512)
comm.barrier()
paths = sorted({link.path for link in comm.communicator.links().values()})
comm.close()
direct = json.loads(pathlib.Path(config).read_text())["backends"]["Direct"]
out = pathlib.Path(os.environ["S3_BUCKET"]) / os.environ["RESULT_PATH"] / f"{rank}.json"
out.write_text(json.dumps({"rank": rank, "relay": direct.get("relay"), "paths": paths}))
"""


def test_cli_relay_reaches_an_fmi_scripts_links(tmp_path: Path) -> None:
    """`pipeline run --local --relay always`: the payload's relay reaches a script's
    fmi.json, and its fmi.Communicator links go through the (in-process) server's relay."""
    from click.testing import CliRunner

    from rendezvous_deploy.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "1.pt").write_bytes(b"never read: the script reads no data")
    script = tmp_path / "links.py"
    script.write_text(SCRIPT_REPORTS_LINKS)
    args = ["pipeline", "run", "--local", "--world-size", "2", "--data", str(data),
            "--results", str(tmp_path / "out"), "--script", str(script)]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--relay", "always"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    combined = json.loads(next((tmp_path / "out" / "runs").glob("*/combined_data.json"))
                          .read_text())  # fmt: skip
    assert combined == [
        {"rank": 0, "relay": "always", "paths": ["relay"]},
        {"rank": 1, "relay": "always", "paths": ["relay"]},
    ]
    bad = runner.invoke(main, [*args, "--relay", "sometimes"])
    assert bad.exit_code == 2 and "'sometimes' is not one of 'auto', 'never', 'always'" in (
        " ".join(bad.output.split()))

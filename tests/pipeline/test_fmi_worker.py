"""An FMI worker written the users' way (``import fmi``) runs unchanged in the script slot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rendezvous_pipeline.results import format_problems
from tests.pipeline.conftest import need_torch
from tests.pipeline.users_format import assert_users_format

FMI_WORKER = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "fmi_worker.py"


@pytest.mark.torch
@pytest.mark.parametrize(
    ("world_size", "expected_paths"),
    [
        (1, [["parts/1.pt", "parts/2.pt", "parts/10.pt"]]),
        (2, [["parts/1.pt", "parts/2.pt"], "parts/10.pt"]),
        (3, ["parts/1.pt", "parts/2.pt", "parts/10.pt"]),
        (5, ["parts/1.pt", "parts/2.pt", "parts/10.pt", None, None]),  # odd, ranks idle
    ],
)
def test_users_fmi_worker_through_the_local_runner(
    world_size: int, expected_paths: list, tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    need_torch()
    from rendezvous_deploy.pipeline.local import run_local

    source = FMI_WORKER.read_text()
    assert "\nimport fmi\n" in source  # FMI's module by its name, no import edited
    assert "import fmi_client" not in source and "from fmi_client" not in source
    run = run_local(
        data_dir=tiny_data,
        results_dir=tmp_path / "results",
        world_size=world_size,
        endpoint=endpoint,
        data_prefix="parts/",
        batch_size=16,
        script=FMI_WORKER,
        timeout=240,
        cpus=2,
    )
    run_dir = run.results_dir
    per_rank = [json.loads((run_dir / f"{r}.json").read_text()) for r in range(world_size)]
    for rank, result in enumerate(per_rank):
        assert_users_format(result, ours=None)  # exactly their ten keys, nothing of ours
        assert format_problems(result) == []
        assert result["data_path"] == expected_paths[rank]
        assert result["result_path"] == f"runs/{run_dir.name}"
        files = (
            0
            if expected_paths[rank] is None
            else (len(expected_paths[rank]) if isinstance(expected_paths[rank], list) else 1)
        )
        assert result["num_batches"] == 3 * files  # 40 samples per file, batches of 16
        assert (result["total_cpu_time (seconds)"] > 0) == (files > 0)
    assert json.loads((run_dir / "combined_data.json").read_text()) == per_rank
    # The reduce to rank 0: the sum of every rank's total_cpu_time, ranks without data too.
    reduced = json.loads((run_dir / "reduce.json").read_text())
    assert reduced["world_size"] == world_size
    expected_sum = sum(r["total_cpu_time (seconds)"] for r in per_rank)
    assert reduced["sum total_cpu_time (seconds)"] == pytest.approx(expected_sum, rel=1e-12)
    assert reduced["sum total_cpu_time (seconds)"] > 0
    assert [o["rank"] for o in run.added] == list(range(world_size))
    assert all(o["returncode"] == 0 for o in run.added)


def test_a_scripts_fmi_json_carries_the_runs_relay_setting(tmp_path: Path) -> None:
    """The payload's relay reaches an FMI script through its fmi.json, which is otherwise
    FMI's as before (no relay key for the default, "auto")."""
    import fmi_client.compat as fmi
    from rendezvous_pipeline.script import write_fmi_config

    (tmp_path / "auto").mkdir()
    (tmp_path / "always").mkdir()
    plain = write_fmi_config(tmp_path / "auto", "127.0.0.1:10000", 30)
    relayed = write_fmi_config(tmp_path / "always", "127.0.0.1:10000", 30, None, "always")
    assert json.loads(plain.read_text())["backends"]["Direct"] == {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 10000,
        "max_timeout": 30000,
    }
    assert json.loads(relayed.read_text())["backends"]["Direct"]["relay"] == "always"
    with fmi.Communicator(0, 2, relayed, "fmi_pair", 512, protocol="v2") as comm:
        assert comm.communicator.relay == "always"  # what the script's links will do

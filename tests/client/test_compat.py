"""fmi_client.compat runs an FMI-style worker unchanged but for its import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fmi_client.compat as fmi
from fmi_client import FmiClientError
from tests.client.ranks import run_ranks


def write_config(path: Path, host: str, port: int) -> Path:
    config = {
        "backends": {
            "Direct": {"enabled": True, "host": host, "port": port, "max_timeout": 1000},
        },
        "model": {"Direct": {"resolve_host_dns": True}},
    }
    path.write_text(json.dumps(config))
    return path


def test_fmi_style_worker_runs_unchanged(server, tmp_path: Path) -> None:
    size = 3
    config = write_config(tmp_path / "fmi.json", server.host, server.port)
    # the worker uses comm_name "fmi_pair" like FMI's examples; keep runs apart per pid
    results = run_ranks(
        lambda rank: ["-m", "tests.client.fmi_style_worker", str(config), str(rank), str(size)],
        size,
        timeout=90,
    )
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    out = {r.rank: r.json()["out"] for r in results}
    assert out[1]["recv_int"] == 42 and isinstance(out[1]["recv_int"], int)
    assert out[1]["recv_list"] == [1.32, 2.34]
    assert out[1]["bcast"] == out[2]["bcast"] == 42
    assert out[0]["gather"] == [0, 0, 1, 10, 2, 20]
    assert out[1]["gather"] == out[2]["gather"] == []
    assert [out[r]["scatter"] for r in range(size)] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert out[0]["reduce"] == 6 and out[1]["reduce"] is None
    assert all(out[r]["allreduce"] == 3 for r in range(size))
    assert all(out[r]["allreduce_list"] == [2, 0] for r in range(size))
    # FMI's README: 3 * a + b over ids 0, 1, 2, neither associative nor commutative -> 5
    assert all(out[r]["custom"] == 5 for r in range(size))
    assert [out[r]["scan"] for r in range(size)] == [1.5, 3.0, 4.5]
    assert [out[r]["scan_custom"] for r in range(size)] == [0, 1, 5]


def test_config_without_direct_backend_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "fmi.json"
    config.write_text(json.dumps({"backends": {"S3": {"enabled": True}}}))
    with pytest.raises(FmiClientError, match="Direct"):
        fmi.Communicator(0, 2, str(config), "x")
    with pytest.raises(FmiClientError, match="cannot read"):
        fmi.Communicator(0, 2, str(tmp_path / "missing.json"), "x")


def test_types_and_funcs_behave_like_fmi() -> None:
    assert fmi.types(fmi.datatypes.int).convert(3.0) == 3
    assert fmi.types(fmi.datatypes.double_list, 2).convert([1, 2]) == [1.0, 2.0]
    add = fmi.func(fmi.op.sum).for_type(fmi.types(fmi.datatypes.int_list, 2))
    assert add([1, 2], [10, 20]) == [11, 22]
    custom = fmi.func(fmi.op.custom, lambda a, b: 2 * a + b, True, True)
    assert custom.for_type(fmi.types(fmi.datatypes.int))(1, 2) == 4
    assert {h.name for h in fmi.hints} == {"fast", "cheap"}

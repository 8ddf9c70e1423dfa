"""`rendezvous-deploy pipeline ...` mistakes: a clear message naming the problem, exit != 0,
never a traceback; and the output never claims what did not happen."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rendezvous_deploy.cli import main
from rendezvous_deploy.pipeline.local import PipelineFailed, run_ranks
from testbed.procs import free_port
from tests.pipeline.conftest import need_torch

PAYLOAD = {
    "bucket": "results",
    "data_bucket": "data",
    "data_prefix": "parts/",
    "result_path": "runs/x",
    "world_size": 1,
    "rendezvous_endpoint": "rendezvous.example.org:10000",
}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendezvous-pipeline-worker:abc"
LOCATIONS = ["--data", "s3://data", "--results", "s3://results"]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, ["pipeline", *args])


def assert_clean_failure(result: Result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    for needle in needles:
        assert needle in result.output, result.output


def test_run_without_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "RENDEZVOUS_DEPLOY_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps(PAYLOAD))
    result = invoke(["run", "--payload", str(payload), "--world-size", "2"])
    assert_clean_failure(result, "no AWS region configured")


def test_run_payload_not_an_object(tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text("[1, 2]")
    result = invoke(["run", "--payload", str(payload), "--world-size", "2", "--region", "x"])
    assert_clean_failure(result, "payload must be a JSON object", "got a JSON list")


@pytest.mark.parametrize("address", ["localhost", "localhost:", "host:99999", ":80"])
def test_run_local_rendezvous_not_host_port(tmp_path: Path, address: str) -> None:
    (tmp_path / "1.pt").write_bytes(b"")
    result = invoke(["run", "--local", "--data", str(tmp_path), "--rendezvous", address])
    assert_clean_failure(result, "--rendezvous", "expected host:port", repr(address))


def test_report_corrupt_runs_file(tmp_path: Path) -> None:
    runs = tmp_path / "bad.json"
    runs.write_text('[{"execution_arn": ')
    result = invoke(["report", "--runs-file", str(runs), "--region", "us-east-1"])
    assert_clean_failure(result, f"{runs} is not valid JSON")
    runs.write_text('{"execution_arn": "x"}')
    result = invoke(["report", "--runs-file", str(runs), "--region", "us-east-1"])
    assert_clean_failure(result, "is not a list of recorded runs")


def test_report_unknown_execution(aws_env: str, tmp_path: Path) -> None:
    arn = "arn:aws:states:us-east-1:123456789012:execution:nope:nope"
    result = invoke(
        ["report", "--execution", arn, "--out", str(tmp_path), "--endpoint-url", aws_env]
    )
    assert_clean_failure(result, f"execution {arn} does not exist")


def test_report_warns_when_no_report_lines(aws_env: str, tmp_path: Path) -> None:
    name = f"pl-empty{os.getpid()}"
    up = invoke(["up", "--name", name, "--image-uri", IMAGE, *LOCATIONS, "--endpoint-url", aws_env])
    assert up.exit_code == 0, up.output
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps(PAYLOAD))
    runs = tmp_path / "runs.json"
    started = invoke(
        [
            "run",
            "--name",
            name,
            "--payload",
            str(payload),
            "--world-size",
            "2",
            "--no-wait",
            "--runs-file",
            str(runs),
            "--endpoint-url",
            aws_env,
        ]
    )
    assert started.exit_code == 0, started.output
    arn = json.loads(runs.read_text())[0]["execution_arn"]
    result = invoke(
        [
            "report",
            "--name",
            name,
            "--runs-file",
            str(runs),
            "--out",
            str(tmp_path / "out"),
            "--endpoint-url",
            aws_env,
        ]
    )
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"no REPORT lines yet for {arn}" in flat
    assert "still running, or logs not delivered yet" in flat


def test_run_local_unreachable_rendezvous_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "1.pt").write_bytes(b"")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = invoke(
        [
            "run",
            "--local",
            "--data",
            str(tmp_path),
            "--rendezvous",
            address,
            "--world-size",
            "2",
            "--results",
            str(tmp_path / "out"),
        ]
    )
    assert_clean_failure(result, f"no rendezvous server reachable at {address}")
    assert "rendezvous server at" not in result.output
    assert "ranks done" not in result.output


def test_run_local_accepts_a_listening_rendezvous(tmp_path: Path) -> None:
    """The probe connects and lets go: a listener passes it (the run then needs data)."""
    from rendezvous_deploy.pipeline.local import probe_endpoint

    with socket.create_server(("127.0.0.1", 0)) as listener:
        probe_endpoint(f"127.0.0.1:{listener.getsockname()[1]}")
        peer, _ = listener.accept()
        peer.close()


def test_failed_ranks_are_not_counted_done(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    bad_item = {"RANK": 0, "WORLD_SIZE": 1}  # lacks every other item field
    with pytest.raises(PipelineFailed) as failed:
        run_ranks([bad_item], tmp_path, timeout=120, progress=lambda d, t: seen.append((d, t)))
    assert seen and all(done == 0 for done, _ in seen), seen
    message = str(failed.value)
    assert "missing item field" in message
    assert "PayloadError(" not in message, "errors are shown with str(), not repr()"


@pytest.mark.parametrize("args", [["--files", "0"], ["--files", "-3"], ["--samples", "0"]])
def test_generate_refuses_non_positive(tmp_path: Path, args: list[str]) -> None:
    result = invoke(["generate", str(tmp_path / "d"), *args])
    assert result.exit_code == 2, result.output
    assert "x>=1" in result.output
    assert not (tmp_path / "d").exists()


def test_generate_refuses_to_mix_data_sets(tmp_path: Path) -> None:
    need_torch()
    (tmp_path / "old.pt").write_bytes(b"old")
    result = invoke(["generate", str(tmp_path), "--files", "1", "--samples", "2"])
    assert_clean_failure(result, "already holds 1 .pt file", "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]
    forced = invoke(["generate", str(tmp_path), "--files", "1", "--samples", "2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.pt"]


def test_single_world_size_removes_stale_plot(
    tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.png").write_bytes(b"stale")
    result = invoke(
        [
            "run",
            "--local",
            "--world-size",
            "1",
            "--data",
            str(tiny_data),
            "--results",
            str(out),
            "--rendezvous",
            endpoint,
            "--timeout",
            "300",
        ]
    )
    assert result.exit_code == 0, result.output
    assert not (out / "sweep.png").exists()
    assert "no plot: a sweep plot needs two or more world sizes" in result.output
    assert (out / "sweep.csv").is_file()

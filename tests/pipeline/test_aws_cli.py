"""`pipeline up / run / report` against a moto server process (real HTTP, real boto3).

moto runs no Lambda code and no executions: the test checks what the deploy calls
created, that executions start with the right input, and writes the CloudWatch log
events the Lambdas would have written, then reads them back through `pipeline report`.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.pipeline.cloud import PipelineNames, handler_zip, layer_zip
from tests.pipeline.users_format import USERS_RESULT

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendezvous-pipeline-worker:abc"


def invoke(args: list[str], url: str) -> str:
    result = CliRunner().invoke(main, [*args, "--endpoint-url", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


def test_up_deploys_everything_once(aws_env: str) -> None:
    name = "pl-up"
    names = PipelineNames(name)
    first = invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE], aws_env)
    assert first.strip().endswith(f"stateMachine:{name}")
    assert first.count("✓") == 7

    lam = client("lambda", aws_env)
    worker = lam.get_function(FunctionName=names.worker)
    assert worker["Configuration"]["PackageType"] == "Image"
    assert worker["Code"]["ImageUri"] == IMAGE
    assert worker["Configuration"]["Timeout"] == 900
    for function, handler in ((names.initialize, "examples.pipeline.initialize.handler"),
                              (names.summarize, "examples.pipeline.summarize.handler")):
        config = lam.get_function(FunctionName=function)["Configuration"]
        assert config["Handler"] == handler
        assert config["Timeout"] == 120  # not the 3 s that killed the users' Initialize
        assert config["Layers"][0]["Arn"].split(":")[-2] == names.layer

    iam = client("iam", aws_env)
    trust = iam.get_role(RoleName=names.states_role)["Role"]["AssumeRolePolicyDocument"]
    assert "states.amazonaws.com" in json.dumps(trust)
    states_policy = iam.get_role_policy(RoleName=names.states_role, PolicyName=names.states_role)
    assert "lambda:InvokeFunction" in json.dumps(states_policy["PolicyDocument"])

    sfn = client("stepfunctions", aws_env)
    machine = sfn.list_state_machines()["stateMachines"][0]
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"]
    )
    assert list(definition["States"]) == ["Initialize", "Distributed Test", "Summarize"]
    fan_out = definition["States"]["Distributed Test"]
    assert fan_out["MaxConcurrencyPath"] == "$.max_concurrency"  # never below world size
    assert fan_out["ItemReader"]["Parameters"] == {"Bucket.$": "$.items_bucket",
                                                   "Key.$": "$.items_key"}
    assert fan_out["ToleratedFailurePercentage"] == 0
    rank = fan_out["ItemProcessor"]["States"]["Rank"]
    assert rank["Parameters"]["FunctionName"].endswith(f":function:{names.worker}")

    second = invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE], aws_env)
    assert "✓" not in second.replace("✓ Lambda role", "").replace("✓ Step Functions role", "")
    assert len(lam.list_layer_versions(LayerName=names.layer)["LayerVersions"]) == 1


def test_zip_functions_import_without_site_packages(tmp_path: Path) -> None:
    """The handler zip plus the layer is all Initialize and Summarize need (no numpy)."""
    with zipfile.ZipFile(io.BytesIO(handler_zip())) as archive:
        archive.extractall(tmp_path / "task")
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as archive:
        archive.extractall(tmp_path / "layer")
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import examples.pipeline.initialize, examples.pipeline.summarize, fmi_client\n"
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code, str(tmp_path / "task"),
         str(tmp_path / "layer" / "python")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def report_line(request_id: str, billed_ms: int, memory: int, used: int, cold: bool) -> str:
    line = (f"REPORT RequestId: {request_id}\tDuration: {billed_ms - 0.4} ms\t"
            f"Billed Duration: {billed_ms} ms\tMemory Size: {memory} MB\t"
            f"Max Memory Used: {used} MB\t")
    return line + ("Init Duration: 250.00 ms\t" if cold else "")


def test_run_then_report(aws_env: str, tmp_path: Path) -> None:
    name = "pl-run"
    names = PipelineNames(name)
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({
        "bucket": "results", "data_bucket": "data", "data_prefix": "parts/",
        "result_path": "runs/x", "world_size": "1", "batch_size": "512",
        "object_type": "folder", "S3_object_name": "", "script": "",
        "rendezvous_endpoint": "rendezvous.example.org:10000",
    }))
    runs_file = tmp_path / "runs.json"
    out = invoke(["pipeline", "run", "--name", name, "--payload", str(payload_file),
                  "--world-size", "2,3", "--no-wait", "--runs-file", str(runs_file)], aws_env)
    assert "world size 3: started" in out
    runs = json.loads(runs_file.read_text())
    assert [r["world_size"] for r in runs] == [2, 3]

    sfn = client("stepfunctions", aws_env)
    for run in runs:
        described = sfn.describe_execution(executionArn=run["execution_arn"])
        sent = json.loads(described["input"])
        assert sent["world_size"] == run["world_size"]
        assert sent["run_id"] == run["run_id"] == described["name"]
        assert sent["bucket"] == "results"

    # What the Lambdas would have logged: run markers, REPORT lines, and another run's noise.
    logs = client("logs", aws_env)
    now = int(time.time() * 1000)
    events: dict[str, list[str]] = {f: [] for f in names.functions()}
    expected: dict[int, list[tuple[int, int, int]]] = {2: [], 3: []}
    for run in runs:
        ws, rid = run["world_size"], run["run_id"]
        events[names.initialize] += [f"PIPELINE_RUN {rid} initialize RequestId: i-{rid}",
                                     report_line(f"i-{rid}", 900, 512, 80, True)]
        expected[ws].append((900, 512, 80))
        for rank in range(ws):
            req = f"w-{rid}-{rank}"
            billed = 20_000 + 1000 * rank
            events[names.worker] += [f"PIPELINE_RUN {rid} rank {rank} RequestId: {req}",
                                     report_line(req, billed, 3008, 2000 + rank, rank == 0)]
            expected[ws].append((billed, 3008, 2000 + rank))
        events[names.summarize] += [f"PIPELINE_RUN {rid} summarize RequestId: s-{rid}",
                                    report_line(f"s-{rid}", 300, 512, 70, False)]
        expected[ws].append((300, 512, 70))
    events[names.worker] += ["PIPELINE_RUN other-run rank 0 RequestId: zzz",
                             report_line("zzz", 99_000, 3008, 3000, False)]
    for function, messages in events.items():
        group = f"/aws/lambda/{function}"
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s")
        logs.put_log_events(
            logGroupName=group, logStreamName="s",
            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
        )

    # What each run's Summarize would have kept: its per-rank objects (the users' format)
    # and summary, 0.5 MB partitions for world size 2 and 1.5 MB for world size 3.
    s3 = client("s3", aws_env)
    s3.create_bucket(Bucket="results")
    for run in runs:
        ws, rid = run["world_size"], run["run_id"]
        combined = [{**USERS_RESULT, "total_cpu_time (seconds)": 10.0 * ws + rank,
                     "throughput_bps": 1e6 * (rank + 1), "result_path": "runs/x"}
                    for rank in range(ws)]
        kept = f"runs/x/_pipeline/runs/{rid}"
        s3.put_object(Bucket="results", Key=f"{kept}/combined_data.json",
                      Body=json.dumps(combined).encode())
        s3.put_object(Bucket="results", Key=f"{kept}/summary.json",
                      Body=json.dumps({"run_id": rid, "partition_mb": ws - 1.5}).encode())

    out_dir = tmp_path / "report"
    invoke(["pipeline", "report", "--name", name, "--runs-file", str(runs_file),
            "--out", str(out_dir)], aws_env)
    figures = list(csv.DictReader((out_dir / "runs.csv").open()))
    costs = {row["world size"]: row["cost (USD)"] for row in csv.DictReader(
        (out_dir / "report.csv").open())}
    assert [(r["world size"], r["partition (MB)"], r["ranks"]) for r in figures] == [
        ("2", "0.5", "2"), ("3", "1.5", "3")]
    assert [float(r["total CPU time (s)"]) for r in figures] == [20.5, 31.0]  # mean per rank
    assert [float(r["throughput (Mbit/s)"]) for r in figures] == [3.0, 6.0]  # sum over ranks
    assert all(r["cost (USD)"] == costs[r["world size"]] for r in figures)
    assert "| total CPU time (s) |" in (out_dir / "report.md").read_text()
    rows = list(csv.DictReader((out_dir / "report.csv").open()))
    assert [int(r["world size"]) for r in rows] == [2, 3]
    for row in rows:
        ws = int(row["world size"])
        figures = expected[ws]
        gb_s = sum(billed / 1000 * mem / 1024 for billed, mem, _ in figures)
        assert int(row["requests"]) == ws + 2
        assert float(row["billed GB-s"]) == pytest.approx(gb_s, abs=1e-3)
        assert float(row["cost (USD)"]) == pytest.approx(
            gb_s * 0.0000166667 + len(figures) * 0.2e-6, abs=1e-6)
        assert int(row["max memory used (MB)"]) == 2000 + ws - 1
        assert int(row["configured memory (MB)"]) == 3008
        assert float(row["max duration (s)"]) == pytest.approx(20 + ws - 1 - 0.0004, abs=0.01)
        assert int(row["cold starts"]) == 2
    # ws 2 by hand: 0.9*0.5 + 20*2.9375 + 21*2.9375 + 0.3*0.5 = 0.45 + 120.4375 + 0.15
    #   = 121.0375 GB-s
    assert float(rows[0]["billed GB-s"]) == pytest.approx(121.0375, abs=1e-3)
    markdown = (out_dir / "report.md").read_text()
    assert "0.0000166667 USD per GB-s" in markdown
    assert (out_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_refuses_a_bad_payload_before_starting(aws_env: str, tmp_path: Path) -> None:
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({"bucket": "b", "worldsize": 8}))
    result = CliRunner().invoke(main, ["pipeline", "run", "--payload", str(payload_file),
                                       "--endpoint-url", aws_env])
    assert result.exit_code != 0
    assert "unknown field 'worldsize'" in result.output
    assert "missing field 'rendezvous_endpoint'" in result.output
    sfn = client("stepfunctions", aws_env)
    assert sfn.list_state_machines()["stateMachines"] == []


def test_run_waits_with_a_deadline_and_failures_carry_the_rank_message(
    aws_env: str, tmp_path: Path
) -> None:
    from deploy.pipeline.cloud import failure_message

    name = "pl-wait"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({
        "bucket": "results", "data_prefix": "p/", "result_path": "r", "world_size": 1,
        "rendezvous_endpoint": "10.0.0.1:10000",
    }))
    out = invoke(["pipeline", "run", "--name", name, "--payload", str(payload_file),
                  "--world-size", "1", "--timeout", "0.5", "--runs-file",
                  str(tmp_path / "runs.json")], aws_env)
    assert "world size 1: RUNNING" in out  # moto never finishes it; the wait is bounded
    cause = json.dumps({"errorMessage": "rank 2/8 failed: cannot load s3://d/p/3.pt",
                        "errorType": "RankFailed"})
    assert failure_message({"error": "States.ExceedToleratedFailureThreshold",
                            "cause": cause}) == (
        "States.ExceedToleratedFailureThreshold: rank 2/8 failed: cannot load s3://d/p/3.pt"
    )


def test_the_pipeline_takes_an_fmi_worker_in_the_script_slot(
    aws_env: str, tmp_path: Path
) -> None:
    """The layer `up` publishes holds the `fmi` module, and a payload naming the users'-style
    worker in `script` starts an execution that hands it to every rank unchanged."""
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as archive:
        assert "python/fmi.py" in archive.namelist()
        shim = archive.read("python/fmi.py").decode()
    assert "sys.modules[__name__] = _compat" in shim
    name = "pl-fmi"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE], aws_env)
    payload_file = tmp_path / "payload.json"
    payload = {
        "bucket": "results", "data_bucket": "data", "data_prefix": "parts/",
        "result_path": "runs/fmi", "world_size": 2, "script": "scripts/fmi_worker.py",
        "rendezvous_endpoint": "rendezvous.example.org:10000",
    }
    payload_file.write_text(json.dumps(payload))
    runs_file = tmp_path / "runs.json"
    invoke(["pipeline", "run", "--name", name, "--payload", str(payload_file),
            "--world-size", "3", "--no-wait", "--runs-file", str(runs_file)], aws_env)
    run = json.loads(runs_file.read_text())[0]
    sent = json.loads(
        client("stepfunctions", aws_env).describe_execution(executionArn=run["execution_arn"])[
            "input"
        ]
    )
    assert sent["script"] == "scripts/fmi_worker.py" and sent["world_size"] == 3
    from examples.pipeline.payload import build_items, validate_payload

    items = build_items(validate_payload(sent), ["parts/1.pt", "parts/2.pt", "parts/3.pt"])
    assert [(i["SCRIPT"], i["RANK"], i["WORLD_SIZE"]) for i in items] == [
        ("scripts/fmi_worker.py", r, 3) for r in range(3)
    ]

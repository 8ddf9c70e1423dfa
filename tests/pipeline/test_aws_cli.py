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

from rendezvous_deploy.cli import main
from rendezvous_deploy.pipeline.bundles import handler_zip, layer_zip
from rendezvous_deploy.pipeline.names import PipelineNames
from tests.pipeline.users_format import USERS_RESULT

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendezvous-pipeline-worker:abc"
LOCATIONS = ["--data", "s3://data", "--results", "s3://results"]


def invoke(args: list[str], url: str) -> str:
    result = CliRunner().invoke(main, [*args, "--endpoint-url", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


def test_up_deploys_everything_once(aws_env: str) -> None:
    name = "pl-up"
    names = PipelineNames(name)
    first = invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    assert first.strip().endswith(f"stateMachine:{name}")
    assert first.count("~ ") == 8  # 3 roles, layer, 3 functions, state machine

    lam = client("lambda", aws_env)
    worker = lam.get_function(FunctionName=names.worker)
    assert worker["Configuration"]["PackageType"] == "Image"
    assert worker["Code"]["ImageUri"] == IMAGE
    assert worker["Configuration"]["Timeout"] == 900
    for function, handler in (
        (names.initialize, "rendezvous_pipeline.initialize.handler"),
        (names.summarize, "rendezvous_pipeline.summarize.handler"),
    ):
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
    assert fan_out["ItemReader"]["Parameters"] == {
        "Bucket.$": "$.items_bucket",
        "Key.$": "$.items_key",
    }
    assert fan_out["ToleratedFailurePercentage"] == 0
    rank = fan_out["ItemProcessor"]["States"]["Rank"]
    assert rank["Parameters"]["FunctionName"].endswith(f":function:{names.worker}")

    second = invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    third = invoke(
        [
            "pipeline",
            "up",
            "--name",
            name,
            "--image-uri",
            IMAGE,
            *LOCATIONS,
            "--worker-memory",
            "2048",
            "--worker-timeout",
            "600",
        ],
        aws_env,
    )
    assert f"~ function {names.worker} Timeout: 900 -> 600" in third
    assert f"~ function {names.worker} MemorySize: 3008 -> 2048" in third
    assert "~ " not in second  # nothing changed, roles included
    assert len(lam.list_layer_versions(LayerName=names.layer)["LayerVersions"]) == 1


def test_up_lets_only_initialize_read_the_servers_auth_secret(aws_env: str) -> None:
    name = "pl-auth"
    names = PipelineNames(name)
    refused = CliRunner().invoke(
        main,
        [
            "pipeline",
            "up",
            "--name",
            name,
            "--image-uri",
            IMAGE,
            *LOCATIONS,
            "--auth",
            "--server-name",
            "rdv",
            "--endpoint-url",
            aws_env,
        ],
    )
    assert refused.exit_code == 1
    assert "no auth secret rendezvous/rdv/auth-secret" in refused.output
    assert "server up --name rdv" in refused.output
    lam = client("lambda", aws_env)
    assert not lam.list_functions()["Functions"] or all(
        f["FunctionName"] != names.initialize for f in lam.list_functions()["Functions"]
    )

    arn = client("secretsmanager", aws_env).create_secret(
        Name="rendezvous/rdv/auth-secret", SecretString="v" * 43
    )["ARN"]
    shown = invoke(
        [
            "pipeline",
            "up",
            "--name",
            name,
            "--image-uri",
            IMAGE,
            *LOCATIONS,
            "--server-name",
            "rdv",
        ],
        aws_env,
    )
    assert "Initialize mints each run's credential from the server's rendezvous/rdv/" in shown
    assert "v" * 43 not in shown
    config = lam.get_function(FunctionName=names.initialize)["Configuration"]
    assert config["Environment"]["Variables"] == {"RENDEZVOUS_AUTH_SECRET_ARN": arn}
    assert config["Role"].endswith(f":role/{names.initialize_role}")
    for function in (names.worker, names.summarize):
        other = lam.get_function(FunctionName=function)["Configuration"]
        assert other["Role"].endswith(f":role/{names.lambda_role}")
        assert "RENDEZVOUS_AUTH_SECRET_ARN" not in json.dumps(other.get("Environment", {}))
    iam = client("iam", aws_env)

    def readers(role: str) -> list[str]:
        document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
        return [
            s["Resource"]
            for s in document["Statement"]
            if "secretsmanager:GetSecretValue" in s["Action"]
        ]

    assert readers(names.initialize_role) == [arn]  # exactly the server's secret
    assert readers(names.lambda_role) == []  # users' scripts run in the worker
    again = invoke(
        [
            "pipeline",
            "up",
            "--name",
            name,
            "--image-uri",
            IMAGE,
            *LOCATIONS,
            "--server-name",
            "rdv",
        ],
        aws_env,
    )
    assert "~ " not in again
    off = invoke(
        ["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS, "--no-auth"], aws_env
    )
    assert f"~ function {names.initialize} Environment" in off
    assert readers(names.initialize_role) == []
    config = lam.get_function(FunctionName=names.initialize)["Configuration"]
    assert not config.get("Environment", {}).get("Variables")


def test_zip_functions_import_without_site_packages(tmp_path: Path) -> None:
    """The handler zip plus the layer is all Initialize and Summarize need (no numpy)."""
    with zipfile.ZipFile(io.BytesIO(handler_zip())) as archive:
        archive.extractall(tmp_path / "task")
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as archive:
        archive.extractall(tmp_path / "layer")
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import rendezvous_pipeline.initialize, rendezvous_pipeline.summarize, fmi_client\n"
        "from rendezvous_pipeline.runauth import run_auth\n"
        "assert 'RENDEZVOUS_CREDENTIAL' in run_auth('pipeline-r1', b'k' * 43)\n"
        "assert 'numpy' not in sys.modules and 'torch' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-S",
            "-I",
            "-c",
            code,
            str(tmp_path / "task"),
            str(tmp_path / "layer" / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def report_line(request_id: str, billed_ms: int, memory: int, used: int, cold: bool) -> str:
    line = (
        f"REPORT RequestId: {request_id}\tDuration: {billed_ms - 0.4} ms\t"
        f"Billed Duration: {billed_ms} ms\tMemory Size: {memory} MB\t"
        f"Max Memory Used: {used} MB\t"
    )
    return line + ("Init Duration: 250.00 ms\t" if cold else "")


def test_run_then_report(aws_env: str, tmp_path: Path) -> None:
    name = "pl-run"
    names = PipelineNames(name)
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(
        json.dumps(
            {
                "bucket": "results",
                "data_bucket": "data",
                "data_prefix": "parts/",
                "result_path": "runs/x",
                "world_size": "1",
                "batch_size": "512",
                "object_type": "folder",
                "S3_object_name": "",
                "script": "",
                "rendezvous_endpoint": "rendezvous.example.org:10000",
            }
        )
    )
    runs_file = tmp_path / "runs.json"
    out = invoke(
        [
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload_file),
            "--world-size",
            "2,3",
            "--no-wait",
            "--runs-file",
            str(runs_file),
        ],
        aws_env,
    )
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
        events[names.initialize] += [
            f"PIPELINE_RUN {rid} initialize RequestId: i-{rid}",
            report_line(f"i-{rid}", 900, 512, 80, True),
        ]
        expected[ws].append((900, 512, 80))
        for rank in range(ws):
            req = f"w-{rid}-{rank}"
            billed = 20_000 + 1000 * rank
            events[names.worker] += [
                f"PIPELINE_RUN {rid} rank {rank} RequestId: {req}",
                report_line(req, billed, 3008, 2000 + rank, rank == 0),
            ]
            expected[ws].append((billed, 3008, 2000 + rank))
        events[names.summarize] += [
            f"PIPELINE_RUN {rid} summarize RequestId: s-{rid}",
            report_line(f"s-{rid}", 300, 512, 70, False),
        ]
        expected[ws].append((300, 512, 70))
    events[names.worker] += [
        "PIPELINE_RUN other-run rank 0 RequestId: zzz",
        report_line("zzz", 99_000, 3008, 3000, False),
    ]
    for function, messages in events.items():
        group = f"/aws/lambda/{function}"
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s")
        logs.put_log_events(
            logGroupName=group,
            logStreamName="s",
            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
        )

    # What each run's Summarize would have kept: its per-rank objects (the users' format)
    # and summary, 0.5 MB partitions for world size 2 and 1.5 MB for world size 3.
    s3 = client("s3", aws_env)
    s3.create_bucket(Bucket="results")
    for run in runs:
        ws, rid = run["world_size"], run["run_id"]
        # each execution writes under its own result_path, runs/x/<run_id>
        assert run["result_path"] == f"runs/x/{rid}"
        combined = [
            {
                **USERS_RESULT,
                "total_cpu_time (seconds)": 10.0 * ws + rank,
                "throughput_bps": 1e6 * (rank + 1),
                "result_path": run["result_path"],
            }
            for rank in range(ws)
        ]
        if ws == 3:  # one malformed rank: left out of the figures, not counted as 0
            combined[2]["total_cpu_time"] = combined[2].pop("total_cpu_time (seconds)")
        kept = f"{run['result_path']}/_pipeline/runs/{rid}"
        s3.put_object(
            Bucket="results", Key=f"{kept}/combined_data.json", Body=json.dumps(combined).encode()
        )
        s3.put_object(
            Bucket="results",
            Key=f"{kept}/summary.json",
            Body=json.dumps({"run_id": rid, "partition_mb": ws - 1.5}).encode(),
        )

    out_dir = tmp_path / "report"
    output = invoke(
        [
            "pipeline",
            "report",
            "--name",
            name,
            "--runs-file",
            str(runs_file),
            "--out",
            str(out_dir),
        ],
        aws_env,
    )
    figures = list(csv.DictReader((out_dir / "runs.csv").open()))
    costs = {
        row["world size"]: row["cost (USD)"]
        for row in csv.DictReader((out_dir / "report.csv").open())
    }
    assert [(r["world size"], r["partition (MB)"], r["ranks"]) for r in figures] == [
        ("2", "0.5", "2"),
        ("3", "1.5", "3"),
    ]
    assert [float(r["total CPU time (s)"]) for r in figures] == [20.5, 30.5]  # mean per rank
    assert [float(r["throughput (Mbit/s)"]) for r in figures] == [3.0, 3.0]  # sum over ranks
    assert [r["ranks left out"] for r in figures] == ["none", "2"]
    assert "rank 2: missing key 'total_cpu_time (seconds)'" in " ".join(output.split())
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
            gb_s * 0.0000166667 + len(figures) * 0.2e-6, abs=1e-6
        )
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
    result = CliRunner().invoke(
        main, ["pipeline", "run", "--payload", str(payload_file), "--endpoint-url", aws_env]
    )
    assert result.exit_code != 0
    assert "unknown field 'worldsize'" in result.output
    assert "missing field 'rendezvous_endpoint'" in result.output
    sfn = client("stepfunctions", aws_env)
    assert sfn.list_state_machines()["stateMachines"] == []


def test_run_waits_with_a_deadline_and_failures_carry_the_rank_message(
    aws_env: str, tmp_path: Path
) -> None:
    from rendezvous_deploy.pipeline.executions import failure_message

    name = "pl-wait"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(
        json.dumps(
            {
                "bucket": "results",
                "data_prefix": "p/",
                "result_path": "r",
                "world_size": 1,
                "rendezvous_endpoint": "10.0.0.1:10000",
            }
        )
    )
    runs_file = tmp_path / "runs.json"
    result = CliRunner().invoke(
        main,
        [
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload_file),
            "--world-size",
            "1,2",
            "--timeout",
            "0.5",
            "--runs-file",
            str(runs_file),
            "--endpoint-url",
            aws_env,
        ],
    )
    # moto never finishes it: the wait is bounded, and a timeout is a failure, not a ✓.
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    (run,) = json.loads(runs_file.read_text())
    assert (
        f"world size 1: execution {run['execution_arn']} still RUNNING after --timeout 0.5 s"
        in flat
    )
    assert "✗" in result.output and "✓ world size" not in result.output
    assert "world size 2" not in flat  # the next world size waits for this one
    assert "--timeout 0.5 s is shorter than one execution may take (1200 s" in flat
    sfn = client("stepfunctions", aws_env)
    machine = sfn.list_state_machines()["stateMachines"][0]["stateMachineArn"]
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    cause = json.dumps(
        {"errorMessage": "rank 2/8 failed: cannot load s3://d/p/3.pt", "errorType": "RankFailed"}
    )
    assert failure_message({"error": "States.ExceedToleratedFailureThreshold", "cause": cause}) == (
        "States.ExceedToleratedFailureThreshold: rank 2/8 failed: cannot load s3://d/p/3.pt"
    )


def test_the_pipeline_takes_an_fmi_worker_in_the_script_slot(aws_env: str, tmp_path: Path) -> None:
    """The layer `up` publishes holds the `fmi` module, and a payload naming the users'-style
    worker in `script` starts an execution that hands it to every rank unchanged."""
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as archive:
        assert "python/fmi.py" in archive.namelist()
        shim = archive.read("python/fmi.py").decode()
    assert "sys.modules[__name__] = _compat" in shim
    name = "pl-fmi"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    payload_file = tmp_path / "payload.json"
    payload = {
        "bucket": "results",
        "data_bucket": "data",
        "data_prefix": "parts/",
        "result_path": "runs/fmi",
        "world_size": 2,
        "script": "scripts/fmi_worker.py",
        "rendezvous_endpoint": "rendezvous.example.org:10000",
    }
    payload_file.write_text(json.dumps(payload))
    runs_file = tmp_path / "runs.json"
    invoke(
        [
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload_file),
            "--world-size",
            "3",
            "--no-wait",
            "--runs-file",
            str(runs_file),
        ],
        aws_env,
    )
    run = json.loads(runs_file.read_text())[0]
    sent = json.loads(
        client("stepfunctions", aws_env).describe_execution(executionArn=run["execution_arn"])[
            "input"
        ]
    )
    assert sent["script"] == "scripts/fmi_worker.py" and sent["world_size"] == 3
    from rendezvous_pipeline.payload import build_items, validate_payload

    items = build_items(validate_payload(sent), ["parts/1.pt", "parts/2.pt", "parts/3.pt"])
    assert [(i["SCRIPT"], i["RANK"], i["WORLD_SIZE"]) for i in items] == [
        ("scripts/fmi_worker.py", r, 3) for r in range(3)
    ]


def test_run_default_timeout_is_above_the_deployed_workers(aws_env: str) -> None:
    from rendezvous_deploy.aws import Aws
    from rendezvous_deploy.pipeline.preflight import execution_budget

    help_text = CliRunner().invoke(main, ["pipeline", "run", "--help"]).output
    assert "600" not in help_text.replace("--local 600", "")  # no AWS default below 900
    for name, worker_timeout in (("pl-t900", 900), ("pl-t300", 300)):
        invoke(
            [
                "pipeline",
                "up",
                "--name",
                name,
                "--image-uri",
                IMAGE,
                *LOCATIONS,
                "--worker-timeout",
                str(worker_timeout),
            ],
            aws_env,
        )
        budget = execution_budget(Aws(endpoint_url=aws_env), PipelineNames(name))
        assert budget == worker_timeout + 2 * 120 + 60
        assert budget > worker_timeout


def test_each_world_size_writes_under_its_own_result_path(aws_env: str, tmp_path: Path) -> None:
    name = "pl-paths"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(
        json.dumps(
            {
                "bucket": "results",
                "data_prefix": "p/",
                "result_path": "runs/sweep/",
                "world_size": 1,
                "rendezvous_endpoint": "10.0.0.1:10000",
            }
        )
    )
    runs_file = tmp_path / "runs.json"
    for _ in range(2):  # two sweeps of the same payload: four distinct paths
        invoke(
            [
                "pipeline",
                "run",
                "--name",
                name,
                "--payload",
                str(payload_file),
                "--world-size",
                "2,3",
                "--no-wait",
                "--runs-file",
                str(runs_file),
            ],
            aws_env,
        )
    runs = json.loads(runs_file.read_text())
    sfn = client("stepfunctions", aws_env)
    paths = []
    for run in runs:
        sent = json.loads(sfn.describe_execution(executionArn=run["execution_arn"])["input"])
        assert sent["result_path"] == run["result_path"] == f"runs/sweep/{run['run_id']}"
        paths.append(sent["result_path"])
    assert len(set(paths)) == len(runs) == 4


def test_output_in_a_pipe_keeps_arns_and_lines_whole(aws_env: str, tmp_path: Path) -> None:
    """Off a terminal (a pipe, a CI log) nothing wraps at 80 columns."""
    import os

    name = "pl-pipe-output-with-a-long-enough-name"
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(
        json.dumps(
            {
                "bucket": "results",
                "data_prefix": "p/",
                "result_path": "runs/a/fairly/deep/prefix",
                "world_size": 1,
                "rendezvous_endpoint": "10.0.0.1:10000",
            }
        )
    )
    runs_file = tmp_path / "runs.json"
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    exe = str(Path(sys.executable).with_name("rendezvous-deploy"))
    done = subprocess.run(
        [
            exe,
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload_file),
            "--world-size",
            "16",
            "--no-wait",
            "--runs-file",
            str(runs_file),
            "--endpoint-url",
            aws_env,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(runs_file.read_text())
    line = f"~ world size 16: started {run['execution_arn']} (results under {run['result_path']})"
    assert len(line) > 160
    assert line in done.stderr.splitlines(), done.stderr


def test_run_refuses_a_payload_outside_the_locations_up_granted(
    aws_env: str, tmp_path: Path
) -> None:
    name = "pl-scope"
    invoke(
        [
            "pipeline",
            "up",
            "--name",
            name,
            "--image-uri",
            IMAGE,
            "--data",
            "s3://data/parts",
            "--results",
            "s3://results/runs",
        ],
        aws_env,
    )
    payload_file = tmp_path / "payload.json"
    base = {
        "bucket": "results",
        "data_bucket": "data",
        "data_prefix": "parts/",
        "result_path": "runs/sweep",
        "world_size": 1,
        "rendezvous_endpoint": "10.0.0.1:10000",
    }
    cases = [
        ({"bucket": "payroll"}, "write results at s3://payroll/runs/sweep/r/"),
        ({"data_prefix": "secret/"}, "read data at s3://data/secret/"),
        ({"result_path": "elsewhere"}, "write results at s3://results/elsewhere/r/"),
    ]
    sfn = client("stepfunctions", aws_env)
    machine = sfn.list_state_machines()["stateMachines"][0]["stateMachineArn"]
    for change, needle in cases:
        payload_file.write_text(json.dumps({**base, **change}))
        result = CliRunner().invoke(
            main,
            [
                "pipeline",
                "run",
                "--name",
                name,
                "--payload",
                str(payload_file),
                "--no-wait",
                "--world-size",
                "1",
                "--runs-file",
                str(tmp_path / "runs.json"),
                "--endpoint-url",
                aws_env,
            ],
        )
        assert result.exit_code == 1, result.output
        flat = " ".join(result.output.split())
        assert f"the payload would {needle}" in flat, flat
        assert "run `pipeline up` again with those locations" in flat
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    payload_file.write_text(json.dumps(base))  # inside the locations: it starts
    invoke(
        [
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload_file),
            "--no-wait",
            "--world-size",
            "1",
            "--runs-file",
            str(tmp_path / "runs.json"),
        ],
        aws_env,
    )
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1

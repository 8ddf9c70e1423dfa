"""The pipeline's IAM policies allow what its code calls, and nothing more.

Three policies, in deploy/iam/: ``pipeline-deployer.json`` (the person running
``pipeline up / run / report``), ``pipeline-lambda.json`` (the role of the three
functions) and ``pipeline-states.json`` (the state machine's role). Each is checked three
ways: statically (the boto3 calls in the code, and the service integrations in the ASL),
by resource (the ARNs the names and S3 locations resolve to, in and out), and by a real run
against a moto server process whose recorded calls must stay inside the static set.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.cli import main
from rendezvous_deploy.pipeline import cli as pipeline_cli
from rendezvous_deploy.pipeline import cloud
from rendezvous_deploy.pipeline.cloud import PipelineNames
from tests.deploy.policyscan import (
    allowed,
    authorised_as,
    checked_statements,
    covers,
    resource_allows,
    static_actions,
)
from tests.deploy.world import create_boundaries
from tests.facilities import require
from tests.processes import moto_process

ROOT = Path(__file__).resolve().parents[2]
IAM_DIR = ROOT / "deploy" / "iam"
PIPELINE_FILES = sorted(IAM_DIR.glob("pipeline-*.json"))
# What `pipeline up / run / report` runs: the pipeline package and the ECR push it borrows.
DEPLOY_CODE = [
    *sorted((ROOT / "deploy" / "pipeline").glob("*.py")),
    ROOT / "deploy" / "server" / "image.py",
    ROOT / "deploy" / "roles.py",
]
FUNCTION_CODE = sorted((ROOT / "examples" / "pipeline").glob("*.py"))
# Checked by AWS on the deployer's behalf, not called through boto3: passing the roles,
# attaching the layer (CreateFunction), Lambda granting itself pulls from the worker's
# repository (CreateFunction with an image), and the docker engine's push.
IMPLIED_DEPLOYER = {
    "iam:PassRole",
    "lambda:GetLayerVersion",
    "ecr:GetRepositoryPolicy",
    "ecr:SetRepositoryPolicy",
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}
# Actions IAM cannot scope to a resource: the only ones allowed on "*".
WITHOUT_RESOURCE_TYPES = {
    "sts:GetCallerIdentity",
    "lambda:ListLayerVersions",
    "ecr:GetAuthorizationToken",
    "states:ListStateMachines",
}
LAMBDA_RUNTIME_LOGS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
REGION, ACCOUNT = "us-east-1", "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rendezvous-pipeline-worker:abc"
LOCATIONS = ["--data", "s3://data", "--results", "s3://results"]
SECRET_ARN = (
    f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rendezvous/rendezvous/auth-secret-AbC123"
)
FILL: dict[str, Any] = {
    "Region": REGION,
    "Account": ACCOUNT,
    "Prefix": "rendezvous-pipeline",
    "Initialize": "rendezvous-pipeline-initialize",
    "Worker": "rendezvous-pipeline-worker",
    "Summarize": "rendezvous-pipeline-summarize",
    "StateMachine": "rendezvous-pipeline",
    "ListBuckets": ["arn:aws:s3:::data"],
    "ReadObjects": ["arn:aws:s3:::data/*"],
    "WriteObjects": ["arn:aws:s3:::results/*"],
    "ItemObjects": ["arn:aws:s3:::results/*_pipeline/items.json"],
    "AuthSecretArn": SECRET_ARN,
}


def deployer(prefix: str) -> dict[str, Any]:
    return cloud.policy("pipeline-deployer", Region=REGION, Account=ACCOUNT, Prefix=prefix)


def runtime(
    read: tuple[str, ...] = (),
    write: tuple[str, ...] = (),
    any_bucket: bool = False,
    prefix: str = "pl",
) -> tuple[dict, dict]:
    """(lambda role policy, state machine role policy) as `up` would attach them."""
    s3 = cloud.s3_access(read, write, any_bucket=any_bucket)
    names = PipelineNames(prefix)
    return (
        cloud.lambda_policy(REGION, ACCOUNT, names, s3),
        cloud.states_policy(REGION, ACCOUNT, names, s3),
    )


# -- the files ------------------------------------------------------------------------------


def test_the_pipeline_policy_files_exist() -> None:
    names = {p.name for p in PIPELINE_FILES}
    assert {
        "pipeline-deployer.json",
        "pipeline-lambda.json",
        "pipeline-states.json",
        "pipeline-trust-states.json",
    } <= names


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: p.name)
def test_pipeline_policy_files_are_valid_and_fill_completely(path: Path) -> None:
    for statement, listed in checked_statements(json.loads(path.read_text())):
        if statement["Effect"] == "Allow" and statement.get("Resource") == "*":
            assert listed <= WITHOUT_RESOURCE_TYPES, f"scope these to resources: {listed}"
    placeholders = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    assert placeholders <= set(FILL), placeholders - set(FILL)
    filled = cloud.policy(path.stem, **FILL)
    assert "${" not in json.dumps(filled)


def test_a_missing_placeholder_value_is_a_clear_error() -> None:
    with pytest.raises(cloud.DeployError, match=r"pipeline-deployer.json needs .*\$\{Prefix\}"):
        cloud.policy("pipeline-deployer", Region=REGION, Account=ACCOUNT)


# -- the deployer ---------------------------------------------------------------------------


def test_deployer_policy_allows_exactly_what_up_run_and_report_call() -> None:
    policy = allowed(deployer("rendezvous-pipeline"))
    needed = static_actions(DEPLOY_CODE)
    assert len(needed) > 20, sorted(needed)  # the scan found the code's calls
    assert {
        "states:StartExecution",
        "lambda:PublishLayerVersion",
        "logs:FilterLogEvents",
        "iam:PutRolePolicy",
        "iam:GetRolePolicy",
        "iam:UpdateAssumeRolePolicy",
        "states:ListMapRuns",
    } <= needed
    missing = sorted(a for a in needed if not covers(policy, a))
    assert not missing, f"add to deploy/iam/pipeline-deployer.json: {missing}"
    unused = sorted(policy - needed - IMPLIED_DEPLOYER)
    assert not unused, f"pipeline-deployer.json allows actions the code never calls: {unused}"


def test_deployer_policy_reaches_only_the_resources_named_after_the_prefix() -> None:
    prefix = "team-a-pipeline"
    names = PipelineNames(prefix)
    policy = deployer(prefix)
    arn = f"{REGION}:{ACCOUNT}"
    for function in names.functions():
        for action in (
            "lambda:CreateFunction",
            "lambda:UpdateFunctionCode",
            "lambda:GetFunctionConfiguration",
        ):
            assert resource_allows(policy, action, f"arn:aws:lambda:{arn}:function:{function}")
        group = f"arn:aws:logs:{arn}:log-group:/aws/lambda/{function}:*"
        assert resource_allows(policy, "logs:FilterLogEvents", group)
    for role in (names.lambda_role, names.initialize_role, names.states_role):
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        for action in (
            "iam:PutRolePolicy",
            "iam:GetRolePolicy",
            "iam:UpdateAssumeRolePolicy",
            "iam:PassRole",
        ):
            assert resource_allows(policy, action, role_arn), (action, role_arn)
    machine = f"arn:aws:states:{arn}:stateMachine:{names.state_machine}"
    assert resource_allows(policy, "states:CreateStateMachine", machine)
    assert resource_allows(policy, "states:StartExecution", machine)
    child = f"arn:aws:states:{arn}:execution:{names.state_machine}/Distributed Test:0f9e"
    assert resource_allows(policy, "states:DescribeExecution", child)
    layer = f"arn:aws:lambda:{arn}:layer:{names.layer}"
    assert resource_allows(policy, "lambda:PublishLayerVersion", layer)
    assert resource_allows(policy, "lambda:GetLayerVersion", f"{layer}:3")
    repo = f"arn:aws:ecr:{arn}:repository/{names.repository}"
    assert resource_allows(policy, "ecr:CreateRepository", repo)

    # Nothing else: another function, role, machine, log group or repository is out.
    assert not resource_allows(
        policy, "lambda:UpdateFunctionCode", f"arn:aws:lambda:{arn}:function:payroll"
    )
    assert not resource_allows(
        policy, "lambda:UpdateFunctionCode", f"arn:aws:lambda:{arn}:function:{prefix}-initialize-x"
    )
    assert not resource_allows(policy, "iam:PutRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/admin")
    assert not resource_allows(
        policy, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/{prefix}-admin"
    )
    assert not resource_allows(
        policy, "states:StartExecution", f"arn:aws:states:{arn}:stateMachine:{prefix}-other"
    )
    assert not resource_allows(
        policy, "logs:FilterLogEvents", f"arn:aws:logs:{arn}:log-group:/aws/lambda/payroll:*"
    )
    assert not resource_allows(policy, "ecr:PutImage", f"arn:aws:ecr:{arn}:repository/other")
    # Each role goes only to the service that uses it.
    passes = [s for s in policy["Statement"] if s["Action"] == ["iam:PassRole"]]
    services = {
        s["Resource"].rsplit("-", 1)[1]: s["Condition"]["StringEquals"]["iam:PassedToService"]
        for s in passes
    }
    assert services == {
        "lambda": "lambda.amazonaws.com",
        "initialize": "lambda.amazonaws.com",
        "states": "states.amazonaws.com",
    }
    # It may look up the servers' auth secrets (metadata), never read or change one.
    secret = f"arn:aws:secretsmanager:{arn}:secret:rendezvous/rendezvous/auth-secret-AbC123"
    assert resource_allows(policy, "secretsmanager:DescribeSecret", secret)
    assert not resource_allows(
        policy,
        "secretsmanager:DescribeSecret",
        f"arn:aws:secretsmanager:{arn}:secret:payroll-AbC123",
    )
    assert not covers(allowed(policy), "secretsmanager:GetSecretValue")


# -- the runtime roles ----------------------------------------------------------------------


def test_lambda_role_allows_exactly_what_the_handlers_call() -> None:
    lambda_policy, _ = runtime(read=("data",), write=("results",))
    needed = static_actions(FUNCTION_CODE)
    assert needed == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
    }
    granted = allowed(lambda_policy)
    # The workers and Summarize: everything but the server's secret (users' scripts run
    # in the worker, and a holder of the secret mints credentials for any name).
    assert granted - LAMBDA_RUNTIME_LOGS == needed - {"secretsmanager:GetSecretValue"}
    s3 = cloud.s3_access(("data",), ("results",))
    initialize = cloud.lambda_policy(REGION, ACCOUNT, PipelineNames("pl"), s3, SECRET_ARN)
    assert allowed(initialize) - LAMBDA_RUNTIME_LOGS == needed
    assert resource_allows(initialize, "secretsmanager:GetSecretValue", SECRET_ARN)
    assert not resource_allows(
        initialize,
        "secretsmanager:GetSecretValue",
        SECRET_ARN.replace("rendezvous/rendezvous", "rendezvous/other"),
    )
    for function in PipelineNames("pl").functions():
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function}:*"
        assert resource_allows(lambda_policy, "logs:PutLogEvents", group)
    assert not resource_allows(
        lambda_policy,
        "logs:PutLogEvents",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/x:*",
    )


def test_lambda_role_reads_data_and_writes_only_results() -> None:
    lambda_policy, _ = runtime(read=("s3://data/parts",), write=("s3://results/runs/",))
    assert resource_allows(lambda_policy, "s3:ListBucket", "arn:aws:s3:::data")
    assert resource_allows(lambda_policy, "s3:ListBucket", "arn:aws:s3:::results")
    assert not resource_allows(lambda_policy, "s3:ListBucket", "arn:aws:s3:::payroll")
    assert resource_allows(lambda_policy, "s3:GetObject", "arn:aws:s3:::data/parts/10.pt")
    assert resource_allows(lambda_policy, "s3:GetObject", "arn:aws:s3:::results/runs/r1/0.json")
    assert resource_allows(lambda_policy, "s3:PutObject", "arn:aws:s3:::results/runs/r1/0.json")
    assert not resource_allows(lambda_policy, "s3:PutObject", "arn:aws:s3:::data/parts/10.pt")
    assert not resource_allows(lambda_policy, "s3:GetObject", "arn:aws:s3:::data/secret.pt")
    assert not resource_allows(lambda_policy, "s3:GetObject", "arn:aws:s3:::data/partsx/1.pt")
    assert not resource_allows(lambda_policy, "s3:PutObject", "arn:aws:s3:::results/other/0.json")
    # --results B: the whole bucket, read and write; --data D beside it stays read-only.
    whole, _ = runtime(read=("d",), write=("b",))
    assert resource_allows(whole, "s3:PutObject", "arn:aws:s3:::b/anything")
    assert resource_allows(whole, "s3:GetObject", "arn:aws:s3:::d/anything")
    assert not resource_allows(whole, "s3:PutObject", "arn:aws:s3:::d/anything")
    assert not resource_allows(whole, "s3:GetObject", "arn:aws:s3:::c/anything")
    # No location is an error, never every bucket; every bucket only when asked for.
    with pytest.raises(DeployError, match="--results s3://BUCKET/PREFIX"):
        runtime()
    with pytest.raises(DeployError, match="no S3 location for results"):
        runtime(read=("data",))
    anywhere, _ = runtime(any_bucket=True)
    assert resource_allows(anywhere, "s3:GetObject", "arn:aws:s3:::c/anything")


def asl_actions(node: Any) -> set[str]:
    """The IAM actions the state machine's role needs for the ASL's service integrations."""
    integrations = {
        "arn:aws:states:::lambda:invoke": "lambda:InvokeFunction",
        "arn:aws:states:::s3:getObject": "s3:GetObject",
        "arn:aws:states:::s3:putObject": "s3:PutObject",
        "arn:aws:states:::s3:listObjectsV2": "s3:ListBucket",
    }
    found: set[str] = set()
    if isinstance(node, dict):
        if (
            node.get("Type") == "Map"
            and node.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode")
            == "DISTRIBUTED"
        ):
            found |= {"states:StartExecution", "states:DescribeExecution", "states:StopExecution"}
        resource = node.get("Resource")
        if isinstance(resource, str) and resource.startswith("arn:aws:states:::"):
            assert resource in integrations, f"add {resource} to the table"
            found.add(integrations[resource])
        if "ResultWriter" in node:
            found.add("s3:PutObject")
        for value in node.values():
            found |= asl_actions(value)
    elif isinstance(node, list):
        for value in node:
            found |= asl_actions(value)
    return found


def test_state_machine_role_allows_exactly_what_the_definition_uses() -> None:
    _, states_policy = runtime(read=("s3://data/parts",), write=("s3://results/runs",))
    needed = asl_actions(json.loads(cloud.ASL.read_text()))
    assert {"lambda:InvokeFunction", "states:StartExecution", "s3:GetObject"} <= needed
    assert allowed(states_policy) == needed

    names = PipelineNames("pl")
    arn = f"{REGION}:{ACCOUNT}"
    for function in names.functions():
        assert resource_allows(
            states_policy, "lambda:InvokeFunction", f"arn:aws:lambda:{arn}:function:{function}"
        )
    assert not resource_allows(
        states_policy, "lambda:InvokeFunction", f"arn:aws:lambda:{arn}:function:payroll"
    )
    machine = f"arn:aws:states:{arn}:stateMachine:{names.state_machine}"
    assert resource_allows(states_policy, "states:StartExecution", machine)
    assert not resource_allows(states_policy, "states:StartExecution", machine + "-other")
    for execution in (
        f"arn:aws:states:{arn}:execution:pl:ws8-1",
        f"arn:aws:states:{arn}:execution:pl/Distributed Test:4e1d",
    ):
        assert resource_allows(states_policy, "states:StopExecution", execution)
    assert not resource_allows(
        states_policy, "states:StopExecution", f"arn:aws:states:{arn}:execution:other:1"
    )
    # The ItemReader reads Initialize's items files and nothing else.
    items = "arn:aws:s3:::results/runs/r1/_pipeline/items.json"
    assert resource_allows(states_policy, "s3:GetObject", items)
    assert not resource_allows(states_policy, "s3:GetObject", "arn:aws:s3:::results/runs/r1/0.json")
    assert not resource_allows(states_policy, "s3:GetObject", "arn:aws:s3:::data/parts/1.pt")


def test_state_machine_trust_is_limited_to_this_account() -> None:
    trust = cloud.policy(cloud.STATES_TRUST, Account=ACCOUNT)
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "states.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


# -- real runs against moto -----------------------------------------------------------------


def _recording_cli(monkeypatch: pytest.MonkeyPatch) -> dict[str, Aws]:
    """Make the CLI use one Aws for every command (rendezvous_deploy.aws records each action);
    the returned dict holds it under "aws" once the first command has run."""
    holder: dict[str, Aws] = {}

    def factory(region: str | None, endpoint_url: str | None, profile: str | None) -> Aws:
        if "aws" not in holder:
            holder["aws"] = Aws(region=region, endpoint_url=endpoint_url, profile=profile)
        return holder["aws"]

    monkeypatch.setattr(pipeline_cli, "_aws", factory)
    return holder


def invoke(args: list[str], url: str) -> str:
    result = CliRunner().invoke(main, [*args, "--endpoint-url", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_recorded_actions_of_up_run_report_stay_inside_the_deployer_policy(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _recording_cli(monkeypatch)
    name = f"pl-rec-{os.getpid()}"
    names = PipelineNames(name)
    invoke(["pipeline", "up", "--name", name, "--image-uri", IMAGE, *LOCATIONS], aws_env)
    invoke(
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
        ],
        aws_env,
    )  # an update: update_function_configuration
    payload = tmp_path / "payload.json"
    payload.write_text(
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
    runs = tmp_path / "runs.json"
    invoke(
        [
            "pipeline",
            "run",
            "--name",
            name,
            "--payload",
            str(payload),
            "--world-size",
            "1",
            "--no-wait",
            "--runs-file",
            str(runs),
        ],
        aws_env,
    )
    invoke(
        [
            "pipeline",
            "report",
            "--name",
            name,
            "--runs-file",
            str(runs),
            "--out",
            str(tmp_path / "report"),
        ],
        aws_env,
    )
    aws = recorded["aws"]
    # The paths moto cannot reach through the CLI: new code (with a config change, so the
    # update waits), the failed rank's message, and the repository of --build.
    spec = {
        "Runtime": cloud.RUNTIME,
        "Role": f"arn:aws:iam::{ACCOUNT}:role/{names.lambda_role}",
        "Handler": "rendezvous_pipeline.initialize.handler",
        "Code": {"ZipFile": cloud.handler_zip() + b"\0"},
        "Timeout": 60,
    }
    assert cloud.ensure_function(aws, names.initialize, spec)[1]
    arn = json.loads(runs.read_text())[0]["execution_arn"]
    cloud.rank_failure(aws, arn)
    from rendezvous_deploy.server.image import ensure_repository

    ensure_repository(aws, names.repository)

    static = static_actions(DEPLOY_CODE)
    assert aws.actions <= static, sorted(aws.actions - static)
    policy = allowed(deployer(name))
    outside = sorted(a for a in aws.actions if not covers(policy, a))
    assert not outside, outside
    assert {
        "sts:GetCallerIdentity",
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:GetRolePolicy",
        "lambda:PublishLayerVersion",
        "lambda:CreateFunction",
        "lambda:UpdateFunctionConfiguration",
        "lambda:UpdateFunctionCode",
        "lambda:GetFunctionConfiguration",
        "states:CreateStateMachine",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:ListMapRuns",
        "logs:FilterLogEvents",
        "ecr:CreateRepository",
    } <= aws.actions

    # What up attached is what the files say (one source of truth), filled for this name.
    iam = boto3.client("iam", endpoint_url=aws_env, region_name=REGION)
    attached = iam.get_role_policy(RoleName=names.states_role, PolicyName=names.states_role)
    s3 = cloud.s3_access(("s3://data",), ("s3://results",))
    assert attached["PolicyDocument"] == cloud.states_policy(REGION, ACCOUNT, names, s3)
    trust = iam.get_role(RoleName=names.states_role)["Role"]["AssumeRolePolicyDocument"]
    assert trust == cloud.policy(cloud.STATES_TRUST, Account=ACCOUNT)


class _S3Calls:
    """Every S3 and Secrets Manager call boto3's default session makes: (action, resource
    ARN)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        action = authorised_as(f"{model.service_model.signing_name}:{model.name}")
        if "SecretId" in params:
            self.calls.append((action, params["SecretId"]))
            return
        resource = f"arn:aws:s3:::{params['Bucket']}"
        if "Key" in params:
            resource += f"/{params['Key']}"
        self.calls.append((action, resource))


def test_handlers_stay_inside_the_lambda_role_on_a_real_run(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Initialize, one rank and Summarize over moto's S3: each call's action and resource
    is allowed by the role `up` attaches when given the data and results locations."""
    import importlib.util

    require(importlib.util.find_spec("torch") is not None, "torch")
    from rendezvous.embedded import BackgroundServer
    from rendezvous_pipeline import initialize, summarize, worker
    from rendezvous_pipeline.data import make_partition, partition_bytes

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session()
    calls = _S3Calls()
    boto3.DEFAULT_SESSION.events.register("provide-client-params.s3", calls)
    boto3.DEFAULT_SESSION.events.register("provide-client-params.secretsmanager", calls)

    s3 = boto3.Session().client("s3", endpoint_url=aws_env, region_name=REGION)  # unrecorded
    for bucket in ("data", "results"):
        s3.create_bucket(Bucket=bucket)
    for index, key in enumerate(("parts/1.pt", "parts/2.pt")):
        s3.put_object(Bucket="data", Key=key, Body=partition_bytes(make_partition(16, index)))
    server_secret = "s" * 43  # as `server up` makes it, read by Initialize only
    secret_arn = (
        boto3.Session()
        .client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
        .create_secret(Name="rendezvous/rendezvous/auth-secret", SecretString=server_secret)["ARN"]
    )
    monkeypatch.setenv("RENDEZVOUS_AUTH_SECRET_ARN", secret_arn)  # what `up` sets

    with BackgroundServer(
        host="127.0.0.1", port=0, http_port=None, auth_secrets=(server_secret.encode(),)
    ) as server:
        handed = initialize.handler(
            {
                "bucket": "results",
                "data_bucket": "data",
                "data_prefix": "parts/",
                "result_path": "runs/r1",
                "world_size": 1,
                "batch_size": 8,
                "rendezvous_endpoint": server.address,
                "run_id": "r1",
                "timeout": 30,
            }
        )
        items = json.loads(
            s3.get_object(Bucket=handed["items_bucket"], Key=handed["items_key"])["Body"].read()
        )
        # (that read stands in for the state machine's ItemReader: checked below)
        assert "RENDEZVOUS_CREDENTIAL" not in items[0] and "FMI_SECRET" not in items[0]
        # The Map's ItemSelector: the item, and Initialize's auth beside it.
        worker.handler({"item": items[0], "auth": handed["auth"]})
    summary = summarize.handler(handed)
    assert summary["ranks"] == 1 and summary["num_samples"] == 32

    lambda_policy, states_policy = runtime(read=("s3://data/parts",), write=("s3://results/runs",))
    s3_locations = cloud.s3_access(("s3://data/parts",), ("s3://results/runs",))
    initialize_policy = cloud.lambda_policy(
        REGION, ACCOUNT, PipelineNames("pl"), s3_locations, secret_arn
    )
    actions = {action for action, _ in calls.calls}
    assert actions == static_actions(FUNCTION_CODE), actions  # the scan saw them all
    assert [c for c in calls.calls if c[0].startswith("secretsmanager:")] == [
        ("secretsmanager:GetSecretValue", secret_arn)
    ]
    denied = [
        (a, r)
        for a, r in calls.calls
        if not resource_allows(initialize_policy, a, r)
        or (a.startswith("s3:") and not resource_allows(lambda_policy, a, r))
    ]
    assert not denied, denied
    item_arn = f"arn:aws:s3:::{handed['items_bucket']}/{handed['items_key']}"
    assert resource_allows(states_policy, "s3:GetObject", item_arn)


def _moto_auth(url: str, count: str) -> None:
    """Set moto's count of unauthenticated requests ("0": enforce IAM from now on)."""
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def enforcing_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server process of this environment's moto, to be switched to enforcing IAM.

    Its own process, so enforcing never reaches the shared ``moto_server``; this
    environment's moto (>= 5.2.5), as older ones miscompute signatures of S3 listings
    with a prefix when they check them.
    """
    with moto_process() as url:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        create_boundaries(url)
        yield url


def test_the_role_up_attaches_lets_the_handlers_run_and_nothing_more(
    enforcing_moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforcing IAM (it evaluates S3 resources faithfully): the handlers, running
    with the credentials of the role `up` made, read data, write results, and are refused
    writing data or reading outside their locations."""
    import importlib.util

    require(importlib.util.find_spec("torch") is not None, "torch")
    from rendezvous.embedded import BackgroundServer
    from rendezvous_pipeline import initialize, summarize, worker
    from rendezvous_pipeline.data import make_partition, partition_bytes
    from rendezvous_pipeline.storage import S3Storage

    admin = boto3.Session(region_name=REGION)
    s3 = admin.client("s3", endpoint_url=enforcing_moto)
    for bucket in ("data", "results"):
        s3.create_bucket(Bucket=bucket)
    for index, key in enumerate(("parts/1.pt", "parts/2.pt")):
        s3.put_object(Bucket="data", Key=key, Body=partition_bytes(make_partition(16, index)))
    s3.put_object(Bucket="results", Key="private/notes.txt", Body=b"not yours")
    names = PipelineNames(f"pl-enforce-{os.getpid()}")
    settings = cloud.UpSettings(
        names=names,
        image_uri=IMAGE,
        read_locations=("s3://data/parts",),
        write_locations=("s3://results/runs",),
    )
    cloud.up(Aws(endpoint_url=enforcing_moto), settings, lambda _w, _c: None, lambda _t: None)
    role_arn = admin.client("iam", endpoint_url=enforcing_moto).get_role(
        RoleName=names.lambda_role
    )["Role"]["Arn"]
    creds = admin.client("sts", endpoint_url=enforcing_moto).assume_role(
        RoleArn=role_arn, RoleSessionName="rank"
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", enforcing_moto)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    _moto_auth(enforcing_moto, "0")
    try:
        with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
            handed = initialize.handler(
                {
                    "bucket": "results",
                    "data_bucket": "data",
                    "data_prefix": "parts/",
                    "result_path": "runs/r2",
                    "world_size": 1,
                    "batch_size": 8,
                    "rendezvous_endpoint": server.address,
                    "run_id": "r2",
                    "timeout": 30,
                }
            )
            items = json.loads(S3Storage("results").read(handed["items_key"]))
            worker.handler(items[0])
        summary = summarize.handler(handed)
        assert summary["num_samples"] == 32

        refused = [
            lambda: S3Storage("data").write("parts/3.pt", b"overwritten"),  # data: read-only
            lambda: S3Storage("results").read("private/notes.txt"),  # outside the locations
            lambda: S3Storage("results").write("elsewhere/0.json", b"{}"),
            lambda: S3Storage("payroll").list(""),  # another bucket
        ]
        for attempt in refused:
            with pytest.raises(Exception, match="AccessDenied"):
                attempt()
    finally:
        _moto_auth(enforcing_moto, "inf")

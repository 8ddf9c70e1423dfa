"""The deployer cannot make itself more powerful through the roles it creates.

Before: the deployer could PutRolePolicy on roles it may pass, give one AdministratorAccess
and run it (the refresher Lambda, a task). Now every role the tool creates carries a
permissions boundary, and the deployer may create or change only roles that carry it,
never lift or edit the boundary. moto does not evaluate IAM conditions, so this is proved
by policy analysis (tests/deploy/policyscan.py) and, end to end against a moto server
process, by checking that what `up` creates does carry the boundary.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest

from rendezvous_deploy import roles
from rendezvous_deploy.pipeline.names import PipelineNames
from rendezvous_deploy.server import commands
from tests.deploy.conftest import Stack
from tests.deploy.policyscan import escalation_problems

ACCOUNT, REGION = "123456789012", "us-east-1"
SERVER_BOUNDARY = roles.boundary_arn(ACCOUNT, roles.SERVER_BOUNDARY)
PIPELINE_BOUNDARY = roles.boundary_arn(ACCOUNT, roles.PIPELINE_BOUNDARY)
RUNTIME_FILL = {
    "Region": REGION,
    "Account": ACCOUNT,
    "Repository": "rendezvous",
    "ImageRegion": REGION,
    "ImageAccount": ACCOUNT,
    "LogGroup": "/ecs/rendezvous",
    "Cluster": "rendezvous",
    "HostedZoneId": "Z1",
    "RecordName": "rdv.example.com",
    "Function": "rendezvous-dns-refresher",
    "AuthSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
    "rendezvous/rendezvous/auth-secret-AbC123",
    "RedisSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    "rendezvous/rendezvous/redis-url-AbC123",
}
PIPELINE_FILL: dict[str, Any] = {
    "Region": REGION,
    "Account": ACCOUNT,
    "Initialize": "p-initialize",
    "Worker": "p-worker",
    "Summarize": "p-summarize",
    "StateMachine": "p",
    "ListBuckets": ["arn:aws:s3:::d"],
    "ReadObjects": ["arn:aws:s3:::d/*"],
    "WriteObjects": ["arn:aws:s3:::r/*"],
    "ItemObjects": ["arn:aws:s3:::r/*_pipeline/items.json"],
    "AuthSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
    "rendezvous/rendezvous/auth-secret-AbC123",
}


def server_case() -> tuple[dict[str, Any], str, dict[str, Any], list[dict[str, Any]]]:
    deployer = roles.policy(
        "deployer",
        Region=REGION,
        Account=ACCOUNT,
        Prefix="rendezvous",
        HostedZoneId="Z1",
        RecordName="rdv.example.com",
    )
    boundary = roles.policy("server-boundary", Account=ACCOUNT)
    runtime = [roles.policy(n, **RUNTIME_FILL) for n in ("task-execution", "refresher")]
    return deployer, SERVER_BOUNDARY, boundary, runtime


def pipeline_case() -> tuple[dict[str, Any], str, dict[str, Any], list[dict[str, Any]]]:
    deployer = roles.policy(
        "pipeline-deployer", Region=REGION, Account=ACCOUNT, Prefix="rendezvous-pipeline"
    )
    boundary = roles.policy("pipeline-boundary", Account=ACCOUNT)
    runtime = [roles.policy(n, **PIPELINE_FILL) for n in ("pipeline-lambda", "pipeline-states")]
    return deployer, PIPELINE_BOUNDARY, boundary, runtime


@pytest.mark.parametrize("case", [server_case, pipeline_case], ids=["server", "pipeline"])
def test_deployer_policies_pass_the_escalation_check(case: Any) -> None:
    assert escalation_problems(*case()) == []


@pytest.mark.parametrize("case", [server_case, pipeline_case], ids=["server", "pipeline"])
def test_the_check_finds_each_way_back_to_escalation(case: Any) -> None:
    deployer, arn, boundary, runtime = case()
    by_sid = {s["Sid"]: s for s in deployer["Statement"]}

    unconditioned = copy.deepcopy(deployer)  # the old policy: PutRolePolicy on any of ours
    for statement in unconditioned["Statement"]:
        if statement["Sid"] == "ChangeOurRolesOnlyUnderTheBoundary":
            del statement["Condition"]
    found = escalation_problems(unconditioned, arn, boundary, runtime)
    assert "ChangeOurRolesOnlyUnderTheBoundary: iam:PutRolePolicy without the boundary" in found

    other_boundary = escalation_problems(deployer, arn.replace("boundary", "x"), boundary, runtime)
    assert any("iam:CreateRole without the boundary" in p for p in other_boundary)

    liftable = copy.deepcopy(deployer)
    liftable["Statement"] = [
        s
        for s in liftable["Statement"]
        if s["Sid"] not in ("NeverLiftTheBoundary", "NeverAlterTheBoundary")
    ]
    found = escalation_problems(liftable, arn, boundary, runtime)
    assert "no Deny of iam:DeleteRolePermissionsBoundary on *" in found
    assert f"no Deny of iam:CreatePolicyVersion on {arn}" in found

    wide = copy.deepcopy(deployer)
    wide["Statement"].append({"Sid": "Oops", "Effect": "Allow", "Action": "iam:*", "Resource": "*"})
    assert "Oops: allows iam:CreatePolicyVersion" in escalation_problems(
        wide, arn, boundary, runtime
    )
    admin_boundary = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    assert "the boundary allows *" in escalation_problems(deployer, arn, admin_boundary, runtime)
    assert by_sid["NeverLiftTheBoundary"]["Effect"] == "Deny"


def test_roles_up_creates_carry_the_boundary(stack: Stack, quiet: Any) -> None:
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(), quiet)
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name=REGION)
    for name in ("rendezvous-task-execution", "rendezvous-dns-refresher"):
        role = iam.get_role(RoleName=name)["Role"]
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == SERVER_BOUNDARY, name


def test_pipeline_roles_carry_the_boundary(aws_env: str) -> None:
    from click.testing import CliRunner

    from rendezvous_deploy.cli import main

    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rendezvous-pipeline-worker:abc"
    result = CliRunner().invoke(
        main,
        [
            "pipeline",
            "up",
            "--image-uri",
            image,
            "--results",
            "s3://results/runs",
            "--endpoint-url",
            aws_env,
        ],
    )
    assert result.exit_code == 0, result.output
    iam = boto3.client("iam", endpoint_url=aws_env, region_name=REGION)
    names = PipelineNames()
    for name in (names.lambda_role, names.states_role):
        role = iam.get_role(RoleName=name)["Role"]
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == PIPELINE_BOUNDARY, name


def test_missing_boundary_stops_up_before_it_creates_anything(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account where no administrator created the boundary: a clear message with the
    commands that create it, and nothing made."""
    import urllib.request

    from click.testing import CliRunner

    from rendezvous_deploy.cli import main

    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10
    ).close()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/rendezvous-pipeline-worker:abc"
    result = CliRunner().invoke(
        main,
        [
            "pipeline",
            "up",
            "--image-uri",
            image,
            "--results",
            "s3://results/runs",
            "--endpoint-url",
            moto_server,
        ],
    )
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert f"the permissions boundary {PIPELINE_BOUNDARY} does not exist" in flat
    assert "python -m rendezvous_deploy.roles pipeline-boundary Account=123456789012" in flat
    iam = boto3.client("iam", endpoint_url=moto_server, region_name=REGION)
    assert iam.list_roles()["Roles"] == []


def test_moto_enforcing_iam_refuses_the_deployer_the_ways_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto enforcing IAM (actions, resources and Deny; not conditions): a user holding
    the filled deployer policy cannot lift a boundary, edit the boundary policy, give
    itself a policy, or touch the pipeline's roles; it can read its own roles."""
    from tests.deploy.test_pipeline_policies import _moto_auth
    from tests.deploy.world import create_boundaries
    from tests.processes import moto_process

    with moto_process() as url:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        admin = boto3.client("iam", endpoint_url=url, region_name=REGION)
        create_boundaries(url)
        deployer, *_ = server_case()
        admin.create_user(UserName="deployer")
        admin.put_user_policy(
            UserName="deployer", PolicyName="rendezvous-deploy", PolicyDocument=json.dumps(deployer)
        )
        key = admin.create_access_key(UserName="deployer")["AccessKey"]
        trust = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":'
            '{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
        )
        admin.create_role(
            RoleName="rendezvous-task-execution",
            AssumeRolePolicyDocument=trust,
            PermissionsBoundary=SERVER_BOUNDARY,
        )
        admin.create_role(RoleName="rendezvous-pipeline-lambda", AssumeRolePolicyDocument=trust)
        _moto_auth(url, "0")
        try:
            iam = boto3.client(
                "iam",
                endpoint_url=url,
                region_name=REGION,
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )
            assert iam.get_role(RoleName="rendezvous-task-execution")["Role"]
            attempts = {
                "lift the boundary": lambda: iam.delete_role_permissions_boundary(
                    RoleName="rendezvous-task-execution"
                ),
                "edit the boundary": lambda: iam.create_policy_version(
                    PolicyArn=SERVER_BOUNDARY,
                    SetAsDefault=True,
                    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                    '"Action":"*","Resource":"*"}]}',
                ),
                "delete the boundary": lambda: iam.delete_policy(PolicyArn=SERVER_BOUNDARY),
                "give itself a policy": lambda: iam.put_user_policy(
                    UserName="deployer", PolicyName="more", PolicyDocument="{}"
                ),
                "change the pipeline's role": lambda: iam.put_role_policy(
                    RoleName="rendezvous-pipeline-lambda",
                    PolicyName="x",
                    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                    '"Action":"*","Resource":"*"}]}',
                ),
                "make a role elsewhere": lambda: iam.create_role(
                    RoleName="admin-role", AssumeRolePolicyDocument=trust
                ),
            }
            for what, attempt in attempts.items():
                with pytest.raises(Exception, match="AccessDenied") as refused:
                    attempt()
                assert refused.value is not None, what
        finally:
            _moto_auth(url, "inf")

"""The IAM policy files are valid and allow every AWS action the code calls.

The actions are collected twice: statically (every boto3 method name called in the
deploy code, per service) and dynamically (what a full up / refresh / status / down run
actually called, recorded by deploy.aws). The dynamic set must be inside the static one
(so the scan misses nothing), and the policies must allow the static set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploy.refresher.handler import handler
from deploy.server import commands, follower, iam
from tests.deploy.conftest import Stack
from tests.deploy.policyscan import SERVICES, allowed, covers, static_actions
from tests.deploy.test_follow import task_state_change
from tests.deploy.world import clients

ROOT = Path(__file__).resolve().parents[2]
IAM_DIR = ROOT / "deploy" / "iam"
# Called by the docker engine during a push, or by AWS on our behalf, not by boto3.
IMPLIED_DEPLOYER = {
    "iam:PassRole",
    "iam:CreateServiceLinkedRole",
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}


DEPLOY_CODE = [*sorted((ROOT / "deploy" / "server").glob("*.py")), ROOT / "deploy" / "aws.py"]
FUNCTION_CODE = [ROOT / name for name in follower.FUNCTION_FILES]
FILL = {
    "Region": "us-east-1",
    "Account": "123456789012",
    "Cluster": "rendezvous",
    "HostedZoneId": "Z123",
    "RecordName": "rdv.example.com",
    "Function": "rendezvous-dns-refresher",
    "Repository": "rendezvous",
    "LogGroup": "/ecs/rendezvous",
}


# The pipeline's files have their own placeholders: tests/deploy/test_pipeline_policies.py.
SERVER_FILES = sorted(p for p in IAM_DIR.glob("*.json") if not p.name.startswith("pipeline-"))


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.name)
def test_policy_files_are_valid_json_policies(path: Path) -> None:
    document = json.loads(path.read_text())
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", action), action
            assert action.split(":")[0] in SERVICES, action
    placeholders = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    assert placeholders <= set(FILL), placeholders - set(FILL)
    filled = iam.policy(path.stem, **FILL)
    assert "${" not in json.dumps(filled)


def test_deployer_policy_allows_every_action_the_code_calls() -> None:
    policy = allowed(json.loads((IAM_DIR / "deployer.json").read_text()))
    needed = static_actions(DEPLOY_CODE)
    assert len(needed) > 30, sorted(needed)  # the scan found the code's calls
    missing = sorted(a for a in needed if not covers(policy, a))
    assert not missing, f"add to deploy/iam/deployer.json: {missing}"
    unused = sorted(policy - needed - IMPLIED_DEPLOYER)
    assert not unused, f"deployer.json allows actions the code never calls: {unused}"


def test_runtime_policy_allows_exactly_what_the_refresher_calls() -> None:
    policy = iam.policy("refresher", **FILL)
    granted = allowed(policy) - {"logs:CreateLogGroup", "logs:CreateLogStream",
                                  "logs:PutLogEvents"}  # the Lambda runtime writes logs
    needed = static_actions(FUNCTION_CODE)
    assert needed, "the refresher code calls AWS"
    # The refresher reads the zone by id (set in its environment), never lists zones.
    needed.discard("route53:ListHostedZones")
    assert sorted(needed - granted) == []
    assert sorted(granted - needed) == []
    record_statements = [s for s in policy["Statement"] if "route53:ChangeResourceRecordSets"
                         in s["Action"]]
    assert all(s["Resource"] == "arn:aws:route53:::hostedzone/Z123" for s in record_statements)


def test_recorded_actions_of_a_full_run_are_found_by_the_scan(
    stack: Stack, quiet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = stack.aws()
    with stack.fargate() as fargate, stack.propagation():
        commands.up(aws, stack.settings(), quiet)
        fargate.replace()
        commands.dns_refresh(aws, stack.settings(), quiet)
        commands.status(aws, stack.settings())
        commands.down(aws, stack.settings(), quiet, delete=False, remove_record=False)
        commands.down(aws, stack.settings(), quiet, delete=True, remove_record=True)
    static = static_actions(DEPLOY_CODE)
    assert aws.actions <= static, sorted(aws.actions - static)
    assert {"ecs:CreateService", "route53:ChangeResourceRecordSets",
            "lambda:CreateFunction", "events:PutRule"} <= aws.actions

    # The refresher, run as EventBridge would run it, stays inside its runtime policy.
    fn_aws = stack.aws()
    cluster_arn = clients(stack.endpoint)["ecs"].describe_clusters(clusters=["rendezvous"])[
        "clusters"
    ][0]["clusterArn"]
    with stack.fargate() as fargate:
        commands.up(stack.aws(), stack.settings(verify_dns=False), quiet)
        task, _ = fargate.replace()
    config = boto3.client("lambda", endpoint_url=stack.endpoint, region_name="us-east-1")
    variables = config.get_function_configuration(FunctionName="rendezvous-dns-refresher")[
        "Environment"
    ]["Variables"]
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    handler(task_state_change(task, cluster_arn, "rendezvous", "RUNNING"), None, aws=fn_aws)
    runtime = allowed(iam.policy("refresher", **FILL))
    assert fn_aws.actions and fn_aws.actions <= runtime, sorted(fn_aws.actions - runtime)

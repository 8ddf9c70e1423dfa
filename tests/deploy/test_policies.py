"""The IAM policy files are valid and allow every AWS action the code calls.

The actions are collected twice: statically (every boto3 method name called in the
deploy code, per service) and dynamically (what a full up / refresh / status / down run
actually called, recorded by rendezvous_deploy.aws). The dynamic set must be inside the static one
(so the scan misses nothing), and the policies must allow the static set.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from rendezvous_deploy.pipeline.names import PipelineNames
from rendezvous_deploy.refresher.handler import handler
from rendezvous_deploy.server import commands, follower, iam, network
from rendezvous_deploy.server.settings import ServerSettings
from tests.deploy.conftest import Stack
from tests.deploy.events import task_state_change
from tests.deploy.policyscan import (
    allowed,
    checked_statements,
    covers,
    resource_allows,
    static_actions,
)
from tests.deploy.world import clients

ROOT = Path(__file__).resolve().parents[2]
IAM_DIR = ROOT / "deploy" / "iam"
# Called by the docker engine during a push, or by AWS on our behalf, not by boto3
# (ec2:CreateTags: create_security_group with TagSpecifications).
IMPLIED_DEPLOYER = {
    "iam:PassRole",
    "ec2:CreateTags",
    "iam:CreateServiceLinkedRole",
    "secretsmanager:TagResource",  # create_secret with Tags
    "elasticloadbalancing:AddTags",  # create_load_balancer / create_target_group with Tags
    "elasticache:AddTagsToResource",  # create_replication_group / subnet group with Tags
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}


DEPLOY_CODE = [
    *sorted((ROOT / "deploy" / "server").glob("*.py")),
    ROOT / "deploy" / "aws.py",
    ROOT / "deploy" / "roles.py",
]
FUNCTION_CODE = [follower.PACKAGE_DIR / name for name in follower.FUNCTION_FILES]
FILL = {
    "Region": "us-east-1",
    "Account": "123456789012",
    "Cluster": "rendezvous",
    "HostedZoneId": "Z123",
    "RecordName": "rdv.example.com",
    "Function": "rendezvous-dns-refresher",
    "Repository": "rendezvous",
    "ImageRegion": "us-east-1",
    "ImageAccount": "123456789012",
    "LogGroup": "/ecs/rendezvous",
    "Prefix": "rendezvous",
    "AuthSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    "rendezvous/rendezvous/auth-secret-AbC123",
    "RedisSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    "rendezvous/rendezvous/redis-url-AbC123",
}


# The pipeline's files have their own placeholders: tests/deploy/test_pipeline_policies.py.
SERVER_FILES = sorted(p for p in IAM_DIR.glob("*.json") if not p.name.startswith("pipeline-"))


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.name)
def test_policy_files_are_valid_json_policies(path: Path) -> None:
    checked_statements(json.loads(path.read_text()))
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
    granted = allowed(policy) - {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }  # the Lambda runtime writes logs
    needed = static_actions(FUNCTION_CODE)
    assert needed, "the refresher code calls AWS"
    # The refresher reads the zone by id (set in its environment), never lists zones.
    needed.discard("route53:ListHostedZones")
    assert sorted(needed - granted) == []
    assert sorted(granted - needed) == []
    record_statements = [
        s for s in policy["Statement"] if "route53:ChangeResourceRecordSets" in s["Action"]
    ]
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
    assert {
        "ecs:CreateService",
        "route53:ChangeResourceRecordSets",
        "lambda:CreateFunction",
        "events:PutRule",
    } <= aws.actions

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


def test_recorded_actions_of_replicas_runs_are_found_by_the_scan(
    stack: Stack, quiet: Any
) -> None:
    """Replicas mode's calls (NLB, ElastiCache, alias record, switching both ways) are in
    the static scan, so the deployer policy test covers them."""
    from rendezvous_deploy.server.settings import Waits

    aws = stack.aws()
    waits = Waits(poll=0.05, task_timeout=20, dns_timeout=10, cache_timeout=0.2)
    with stack.fargate(), stack.propagation():
        commands.up(aws, stack.settings(), quiet)
        commands.up(aws, stack.settings(replicas=3, waits=waits), quiet)
        commands.status(aws, stack.settings(replicas=3))
        commands.up(aws, stack.settings(waits=waits), quiet)
        commands.up(aws, stack.settings(replicas=2, redis_url="redis://10.0.0.5:6379/0"), quiet)
        commands.down(aws, stack.settings(waits=waits), quiet, delete=False, remove_record=False)
        commands.down(aws, stack.settings(waits=waits), quiet, delete=True, remove_record=True)
    static = static_actions(DEPLOY_CODE)
    assert aws.actions <= static, sorted(aws.actions - static)
    assert {"elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:DeleteTargetGroup",
            "elasticache:CreateReplicationGroup", "elasticache:CreateCacheSubnetGroup",
            "elasticache:DeleteReplicationGroup", "lambda:DeleteFunction"} <= aws.actions
    policy = allowed(json.loads((IAM_DIR / "deployer.json").read_text()))
    assert all(covers(policy, action) for action in aws.actions), sorted(
        a for a in aws.actions if not covers(policy, a))


# -- least privilege of the deployer ---------------------------------------------------------

# Actions IAM cannot scope to a resource (the Service Authorization Reference lists no
# resource type for them): the only ones a deployer.json statement may allow on "*"
# without a condition.
WITHOUT_RESOURCE_TYPES = {
    "sts:GetCallerIdentity",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeNetworkInterfaces",
    "ecr:GetAuthorizationToken",
    "logs:DescribeLogGroups",
    "ecs:DescribeTaskDefinition",
    "route53:ListHostedZones",
    "cloudwatch:GetMetricData",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetHealth",
}
# Actions on "*" whose only resource type is one we cannot name (ListTasks authorises on a
# container instance, which Fargate has none of), narrowed by a condition key instead.
SCOPED_BY_CONDITION = {"ecs:ListTasks": "ecs:cluster"}
ACCOUNT = FILL["Account"]
REGION = FILL["Region"]


def deployer(
    prefix: str = "team-a", zone: str = "Z123", record: str = "rdv.example.com"
) -> dict[str, Any]:
    return iam.policy(
        "deployer",
        Region=REGION,
        Account=ACCOUNT,
        Prefix=prefix,
        HostedZoneId=zone,
        RecordName=record,
    )


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_only_actions_without_resource_types_are_allowed_on_everything() -> None:
    policy = deployer()
    on_everything: set[str] = set()
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or "*" not in _listed(statement["Resource"]):
            continue
        assert _listed(statement["Resource"]) == ["*"], statement["Sid"]
        actions = set(_listed(statement["Action"]))
        if "Condition" in statement:
            assert actions <= set(SCOPED_BY_CONDITION), f"scope these: {actions}"
            keys = {key for test in statement["Condition"].values() for key in test}
            assert keys == {SCOPED_BY_CONDITION[a] for a in actions}, statement["Sid"]
        else:
            on_everything |= actions
    assert on_everything == WITHOUT_RESOURCE_TYPES
    assert static_actions(DEPLOY_CODE) >= WITHOUT_RESOURCE_TYPES  # each one is really used


def test_every_resource_names_the_service_of_its_actions() -> None:
    for statement in deployer()["Statement"]:
        services = {a.split(":")[0] for a in _listed(statement["Action"])}
        for resource in _listed(statement["Resource"]):
            if resource != "*":
                assert {resource.split(":")[2]} == services, (statement["Sid"], resource)
                assert "${" not in resource and ":*:*:" not in resource, resource


def test_deployer_reaches_the_resources_of_its_prefix_and_nothing_else() -> None:
    prefix = "team-a"
    policy = deployer(prefix)
    settings = ServerSettings(name=prefix, record="rdv.example.com")
    arn = f"{REGION}:{ACCOUNT}"
    cluster = settings.cluster_name
    inside = {
        "ecs:CreateCluster": f"arn:aws:ecs:{arn}:cluster/{cluster}",
        "ecs:RegisterTaskDefinition": f"arn:aws:ecs:{arn}:task-definition/{settings.family}:7",
        "ecs:UpdateService": f"arn:aws:ecs:{arn}:service/{cluster}/{settings.service_name}",
        "ecs:DeleteService": f"arn:aws:ecs:{arn}:service/{cluster}/{settings.service_name}",
        "ecs:CreateService": f"arn:aws:ecs:{arn}:service/{cluster}/{settings.service_name}",
        "ecs:DescribeTasks": f"arn:aws:ecs:{arn}:task/{cluster}/0123456789abcdef",
        "logs:CreateLogGroup": f"arn:aws:logs:{arn}:log-group:{settings.log_group}",
        "logs:PutRetentionPolicy": f"arn:aws:logs:{arn}:log-group:{settings.log_group}:*",
        "ecr:CreateRepository": f"arn:aws:ecr:{arn}:repository/{settings.repository}",
        "route53:ChangeResourceRecordSets": "arn:aws:route53:::hostedzone/Z123",
        "route53:GetChange": "arn:aws:route53:::change/C0123",
        "iam:UpdateAssumeRolePolicy": f"arn:aws:iam::{ACCOUNT}:role/{settings.execution_role}",
        "iam:GetRolePolicy": f"arn:aws:iam::{ACCOUNT}:role/{settings.refresher_role}",
        "lambda:UpdateFunctionCode": f"arn:aws:lambda:{arn}:function:{settings.refresher_function}",
        "events:PutRule": f"arn:aws:events:{arn}:rule/{settings.refresher_rule}",
        "ec2:AuthorizeSecurityGroupIngress": f"arn:aws:ec2:{arn}:security-group/sg-1",
        "elasticloadbalancing:CreateLoadBalancer":
            f"arn:aws:elasticloadbalancing:{arn}:loadbalancer/net/{settings.balancer_name}/5e1",
        "elasticloadbalancing:DeleteListener": f"arn:aws:elasticloadbalancing:{arn}:listener/"
            f"net/{settings.balancer_name}/5e1/9a2",
        "elasticloadbalancing:ModifyTargetGroupAttributes": f"arn:aws:elasticloadbalancing:"
            f"{arn}:targetgroup/{settings.rendezvous_target_group}/73c",
        "elasticloadbalancing:DeleteTargetGroup": f"arn:aws:elasticloadbalancing:"
            f"{arn}:targetgroup/{settings.discovery_target_group}/73c",
        "elasticache:CreateReplicationGroup":
            f"arn:aws:elasticache:{arn}:replicationgroup:{settings.cache_name}",
        "elasticache:DeleteCacheSubnetGroup":
            f"arn:aws:elasticache:{arn}:subnetgroup:{settings.cache_name}",
    }
    for action, resource in inside.items():
        assert resource_allows(policy, action, resource), (action, resource)
    outside = {
        "ecs:UpdateService": [
            f"arn:aws:ecs:{arn}:service/prod/api",
            f"arn:aws:ecs:{arn}:service/{cluster}/api",
            f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/{cluster}/{prefix}",
        ],
        "ecs:DeleteService": [f"arn:aws:ecs:{arn}:service/prod/{prefix}"],
        "ecs:RegisterTaskDefinition": [f"arn:aws:ecs:{arn}:task-definition/payroll:1"],
        "logs:CreateLogGroup": [
            f"arn:aws:logs:{arn}:log-group:/aws/lambda/payroll",
            f"arn:aws:logs:{arn}:log-group:/ecs/payroll",
        ],
        "logs:PutRetentionPolicy": [f"arn:aws:logs:{arn}:log-group:/ecs/payroll:*"],
        "route53:ChangeResourceRecordSets": ["arn:aws:route53:::hostedzone/ZOTHER"],
        "iam:PutRolePolicy": [
            f"arn:aws:iam::{ACCOUNT}:role/admin",
            "arn:aws:iam::999999999999:role/team-a-task-execution",
        ],
        "ecr:PutImage": [f"arn:aws:ecr:{arn}:repository/payroll"],
        "elasticloadbalancing:DeleteLoadBalancer": [
            f"arn:aws:elasticloadbalancing:{arn}:loadbalancer/net/payroll-nlb/5e1",
            f"arn:aws:elasticloadbalancing:{arn}:loadbalancer/app/{prefix}-nlb/5e1"],
        "elasticloadbalancing:ModifyTargetGroupAttributes": [
            f"arn:aws:elasticloadbalancing:{arn}:targetgroup/payroll/73c"],
        "elasticloadbalancing:DeleteListener": [
            f"arn:aws:elasticloadbalancing:{arn}:listener/net/payroll-nlb/5e1/9a2"],
        "elasticache:DeleteReplicationGroup": [
            f"arn:aws:elasticache:{arn}:replicationgroup:payroll-cache",
            f"arn:aws:elasticache:eu-west-1:{ACCOUNT}:replicationgroup:{prefix}-cache"],
    }
    for action, resources in outside.items():
        for resource in resources:
            assert not resource_allows(policy, action, resource), (action, resource)
    # Each role is passable only as what it is, and only to the service that uses it.
    passes = {
        s["Resource"]: s["Condition"]["StringEquals"]["iam:PassedToService"]
        for s in policy["Statement"]
        if s["Action"] == ["iam:PassRole"]
    }
    assert passes == {
        f"arn:aws:iam::{ACCOUNT}:role/{prefix}-task-execution": "ecs-tasks.amazonaws.com",
        f"arn:aws:iam::{ACCOUNT}:role/{prefix}-dns-refresher": "lambda.amazonaws.com",
    }


def test_server_prefix_does_not_reach_the_pipelines_resources() -> None:
    """`rendezvous*` covered `rendezvous-pipeline-*` (delete actions included): every
    pattern now names the server's own resources, delimited."""
    policy = deployer("rendezvous")
    arn = f"{REGION}:{ACCOUNT}"
    pipeline = PipelineNames("rendezvous-pipeline")
    outside = {
        "iam:PutRolePolicy": [
            f"arn:aws:iam::{ACCOUNT}:role/{pipeline.lambda_role}",
            f"arn:aws:iam::{ACCOUNT}:role/rendezvousx-task-execution",
        ],
        "iam:DeleteRole": [f"arn:aws:iam::{ACCOUNT}:role/{pipeline.states_role}"],
        "iam:PassRole": [
            f"arn:aws:iam::{ACCOUNT}:role/{pipeline.lambda_role}",
            f"arn:aws:iam::{ACCOUNT}:role/rendezvous-pipeline-task-execution",
        ],
        "lambda:DeleteFunction": [f"arn:aws:lambda:{arn}:function:{pipeline.worker}"],
        "lambda:UpdateFunctionCode": [f"arn:aws:lambda:{arn}:function:{pipeline.initialize}"],
        "ecr:PutImage": [f"arn:aws:ecr:{arn}:repository/{pipeline.repository}"],
        "logs:CreateLogGroup": [f"arn:aws:logs:{arn}:log-group:/ecs/rendezvous-pipeline"],
        "ecs:DeleteService": [
            f"arn:aws:ecs:{arn}:service/rendezvous-pipeline/x",
            f"arn:aws:ecs:{arn}:service/rendezvous/rendezvous-old",
        ],
        "events:DeleteRule": [f"arn:aws:events:{arn}:rule/rendezvous-pipeline-x"],
    }
    for action, resources in outside.items():
        for resource in resources:
            assert not resource_allows(policy, action, resource), (action, resource)


def test_deployer_changes_only_the_a_record_of_its_name() -> None:
    policy = deployer(record="rdv.example.com")
    denies = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    denies = [s for s in denies if any(a.startswith("route53:") for a in _listed(s["Action"]))]
    assert {s["Resource"] for s in denies} == {"arn:aws:route53:::hostedzone/Z123"}
    conditions = {
        key: values
        for s in denies
        for key, values in s["Condition"]["ForAnyValue:StringNotEquals"].items()
    }
    assert conditions == {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["rdv.example.com"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
    }


def test_security_group_rules_only_on_groups_the_code_tags() -> None:
    """The tag the code puts on its group is the tag the policy asks for, in all three
    places: creating (request tag), tagging (only during CreateSecurityGroup), and
    opening ports (resource tag)."""
    policy = deployer()
    tag = network.MANAGED_BY_TAG
    by_action: dict[str, list[dict[str, Any]]] = {}
    for statement in policy["Statement"]:
        for action in _listed(statement["Action"]):
            by_action.setdefault(action, []).append(statement)

    (authorize,) = by_action["ec2:AuthorizeSecurityGroupIngress"]
    assert authorize["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{tag}": network.MANAGED_BY}
    }
    (revoke,) = by_action["ec2:RevokeSecurityGroupIngress"]  # reconciling closes ports too
    assert revoke["Condition"] == authorize["Condition"]
    (tagging,) = by_action["ec2:CreateTags"]
    assert tagging["Condition"] == {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}
    creating = {s["Resource"]: s.get("Condition") for s in by_action["ec2:CreateSecurityGroup"]}
    group_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/*"
    assert creating[group_arn] == {"StringEquals": {f"aws:RequestTag/{tag}": network.MANAGED_BY}}
    assert set(creating) == {group_arn, f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/*"}
    # The code creates the group with that tag in the same call (no separate CreateTags).
    source = (ROOT / "deploy" / "server" / "network.py").read_text()
    assert "TagSpecifications" in source and "create_tags" not in source


def test_deployer_policy_covers_the_role_updates() -> None:
    policy = allowed(deployer())
    assert {
        "iam:GetRolePolicy",
        "iam:UpdateAssumeRolePolicy",
        "iam:PutRolePolicy",
        "ec2:CreateTags",
    } <= policy
    assert {"iam:GetRolePolicy", "iam:UpdateAssumeRolePolicy"} <= static_actions(DEPLOY_CODE)

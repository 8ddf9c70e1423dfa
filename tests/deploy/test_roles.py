"""rendezvous_deploy.roles: one ensure_role for server and pipeline, honest about what it changed.

Against a moto server process; ``Aws.actions`` records every AWS action a call made, so
"nothing changed" is checked as "no Create/Put/Update call", not just as a flag.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.pipeline import cloud
from rendezvous_deploy.server import iam as server_iam

MUTATING = ("iam:CreateRole", "iam:PutRolePolicy", "iam:UpdateAssumeRolePolicy")


def trusting(service: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }


def allowing(*actions: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
    }


@pytest.fixture
def raw_iam(aws_env: str) -> Any:
    return boto3.client("iam", endpoint_url=aws_env, region_name="us-east-1")


def role_name(tag: str) -> str:
    return f"rendezvous-test-{tag}-{os.getpid()}"


def test_new_role_gets_trust_and_inline_policy(aws_env: str, raw_iam: Any) -> None:
    name = role_name("new")
    aws = Aws(endpoint_url=aws_env)
    arn, changed = roles.ensure_role(
        aws, name, trusting("lambda.amazonaws.com"), allowing("s3:GetObject")
    )
    assert changed and arn.endswith(f":role/{name}")
    assert {"iam:CreateRole", "iam:PutRolePolicy"} <= aws.actions
    assert "iam:GetRolePolicy" not in aws.actions  # a new role has none to compare
    role = raw_iam.get_role(RoleName=name)["Role"]
    assert role["AssumeRolePolicyDocument"] == trusting("lambda.amazonaws.com")
    assert role["Description"] == roles.DESCRIPTION
    inline = raw_iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
    assert inline == allowing("s3:GetObject")


def test_unchanged_role_and_policy_call_no_put_or_update(aws_env: str) -> None:
    name = role_name("same")
    trust, inline = trusting("lambda.amazonaws.com"), allowing("s3:GetObject")
    roles.ensure_role(Aws(endpoint_url=aws_env), name, trust, inline)
    aws = Aws(endpoint_url=aws_env)
    arn, changed = roles.ensure_role(aws, name, trust, inline)
    assert not changed and arn.endswith(f":role/{name}")
    assert {"iam:GetRole", "iam:GetRolePolicy"} <= aws.actions  # it did compare
    assert not aws.actions & set(MUTATING), sorted(aws.actions)


def test_stale_trust_policy_of_an_existing_role_is_updated(aws_env: str, raw_iam: Any) -> None:
    name = role_name("trust")
    inline = allowing("s3:GetObject")
    raw_iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(trusting("ec2.amazonaws.com"))
    )
    raw_iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(inline))
    aws = Aws(endpoint_url=aws_env)
    _, changed = roles.ensure_role(aws, name, trusting("lambda.amazonaws.com"), inline)
    assert changed
    assert "iam:UpdateAssumeRolePolicy" in aws.actions
    assert not aws.actions & {"iam:CreateRole", "iam:PutRolePolicy"}, sorted(aws.actions)
    trust = raw_iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    assert trust == trusting("lambda.amazonaws.com")
    # And once fixed, it stays fixed without further calls.
    again = Aws(endpoint_url=aws_env)
    assert not roles.ensure_role(again, name, trusting("lambda.amazonaws.com"), inline)[1]
    assert not again.actions & set(MUTATING)


def test_changed_or_missing_inline_policy_is_put(aws_env: str, raw_iam: Any) -> None:
    name = role_name("inline")
    trust = trusting("ecs-tasks.amazonaws.com")
    raw_iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    aws = Aws(endpoint_url=aws_env)
    assert roles.ensure_role(aws, name, trust, allowing("logs:PutLogEvents"))[1]  # missing
    assert "iam:PutRolePolicy" in aws.actions
    assert "iam:UpdateAssumeRolePolicy" not in aws.actions
    aws = Aws(endpoint_url=aws_env)
    assert roles.ensure_role(aws, name, trust, allowing("logs:CreateLogStream"))[1]  # differs
    assert "iam:PutRolePolicy" in aws.actions
    inline = raw_iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
    assert inline == allowing("logs:CreateLogStream")


def test_pipeline_and_server_use_the_same_honest_ensure_role(aws_env: str) -> None:
    """The pipeline's old copy always called PutRolePolicy; now a second `up` does not."""
    name = role_name("pipeline")
    trust, inline = cloud.policy(cloud.LAMBDA_TRUST), allowing("s3:ListBucket")
    assert cloud.ensure_role(Aws(endpoint_url=aws_env), name, trust, inline)[1]
    aws = Aws(endpoint_url=aws_env)
    assert not cloud.ensure_role(aws, name, trust, inline)[1]
    assert not aws.actions & set(MUTATING), sorted(aws.actions)
    # The server's wrapper takes the trust policy by file name: same role, same answer.
    aws = Aws(endpoint_url=aws_env)
    assert not server_iam.ensure_role(aws, name, cloud.LAMBDA_TRUST, inline)[1]
    assert not aws.actions & set(MUTATING)
    assert cloud.policy is roles.policy and server_iam.policy is roles.policy


def test_delete_role_removes_policy_and_role_once(aws_env: str, raw_iam: Any) -> None:
    name = role_name("delete")
    roles.ensure_role(
        Aws(endpoint_url=aws_env), name, trusting("lambda.amazonaws.com"), allowing("s3:GetObject")
    )
    assert server_iam.delete_role(Aws(endpoint_url=aws_env), name)
    assert not server_iam.delete_role(Aws(endpoint_url=aws_env), name)
    names = [r["RoleName"] for r in raw_iam.list_roles()["Roles"]]
    assert name not in names


def test_policy_documents_compare_as_json_whatever_their_encoding() -> None:
    document = allowing("s3:GetObject")
    encoded = quote(json.dumps(document, indent=2))  # what the raw IAM API returns
    assert roles.decode_document(encoded) == document
    assert roles.decode_document(document) is document
    assert roles.decode_document(None) is None


def test_policy_fills_strings_splices_lists_and_names_a_missing_value() -> None:
    filled = roles.policy(
        cloud.LAMBDA_POLICY,
        Region="us-east-1",
        Account="123456789012",
        Initialize="a",
        Worker="b",
        Summarize="c",
        StateMachine="d",
        ListBuckets=["arn:aws:s3:::x", "arn:aws:s3:::y"],
        ReadObjects=["arn:aws:s3:::x/*"],
        WriteObjects=["arn:aws:s3:::y/*"],
        ItemObjects=["arn:aws:s3:::y/*items.json"],
        AuthSecretArn="arn:aws:secretsmanager:us-east-1:123456789012:"
        "secret:rendezvous/r/auth-secret-AbC123",
    )
    text = json.dumps(filled)
    assert "${" not in text and '"arn:aws:s3:::x", "arn:aws:s3:::y"' in text
    with pytest.raises(DeployError, match=r"refresher.json needs a value for \$\{HostedZoneId\}"):
        roles.policy(
            "refresher", Region="us-east-1", Account="1", Cluster="c", RecordName="r", Function="f"
        )


def test_policy_printer_fills_the_deployer_policy_for_the_readme(
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = [
        "Region=eu-west-1",
        "Account=123456789012",
        "Prefix=rendezvous",
        "HostedZoneId=Z0123",
        "RecordName=rdv.example.com",
    ]
    assert roles.main(["deployer", *values]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == roles.policy("deployer", **dict(v.split("=", 1) for v in values))
    assert "arn:aws:route53:::hostedzone/Z0123" in json.dumps(printed)
    assert roles.main(["deployer", *values[:-1]]) == 2
    assert "needs a value for ${RecordName}" in capsys.readouterr().err


def test_what_is_no_longer_asked_for_is_removed_and_reported_old_to_new(
    aws_env: str, raw_iam: Any
) -> None:
    """Reconciliation, not accumulation: a hand-added inline policy and an attached
    managed policy go; a narrowed statement is shown old -> new; the boundary is set."""
    name = role_name("reconcile")
    trust = trusting("lambda.amazonaws.com")
    roles.ensure_role(
        Aws(endpoint_url=aws_env), name, trust, allowing("s3:GetObject", "s3:PutObject")
    )
    raw_iam.put_role_policy(
        RoleName=name, PolicyName="by-hand", PolicyDocument=json.dumps(allowing("iam:*"))
    )
    admin = raw_iam.create_policy(
        PolicyName=f"admin-{os.getpid()}", PolicyDocument=json.dumps(allowing("*"))
    )["Policy"]["Arn"]
    raw_iam.attach_role_policy(RoleName=name, PolicyArn=admin)
    boundary = roles.boundary_arn("123456789012", roles.SERVER_BOUNDARY)

    changes: list[tuple[str, object, object]] = []
    aws = Aws(endpoint_url=aws_env)
    _, changed = roles.ensure_role(
        aws,
        name,
        trust,
        allowing("s3:GetObject"),
        boundary=boundary,
        on_change=lambda *change: changes.append(change),
    )
    assert changed
    assert raw_iam.list_role_policies(RoleName=name)["PolicyNames"] == [name]
    assert raw_iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    role = raw_iam.get_role(RoleName=name)["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    assert changes == [
        (f"role {name} permissions boundary", None, boundary),
        (f"role {name} policy #0", "s3:GetObject,s3:PutObject on *", "s3:GetObject on *"),
        (f"role {name} policy by-hand #0", "iam:* on *", ""),
        (f"role {name} attached policy", admin, ""),
    ]

    again = Aws(endpoint_url=aws_env)
    assert not roles.ensure_role(again, name, trust, allowing("s3:GetObject"), boundary=boundary)[1]
    assert not again.actions & {
        *MUTATING,
        "iam:DeleteRolePolicy",
        "iam:DetachRolePolicy",
        "iam:PutRolePermissionsBoundary",
    }

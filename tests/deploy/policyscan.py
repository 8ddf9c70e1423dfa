"""Which IAM actions a piece of code needs, and which a policy document allows.

Shared by the server's and the pipeline's policy tests. The scan is static: for every
``client("<service>")`` a file creates, each boto3 method name the file calls (or names
in a string, as ``get_paginator("list_hosted_zones")`` does) becomes ``<prefix>:<Op>``.
A few operations are authorised under another action's name (S3's ``ListObjectsV2`` is
``s3:ListBucket``); :data:`AUTHORISED_AS` maps them.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path
from typing import Any

import boto3

from rendezvous_deploy.aws import IAM_PREFIX

# API operation -> the IAM action AWS checks for it, where the two names differ.
AUTHORISED_AS = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
}
# Every service prefix a policy file in deploy/iam may name.
SERVICES = ("ecs", "ec2", "ecr", "route53", "logs", "iam", "lambda", "events", "sts",
            "states", "s3", "cloudwatch", "secretsmanager", "elasticloadbalancing",
            "elasticache")


def authorised_as(action: str) -> str:
    """The IAM action AWS evaluates for an API operation ``svc:Op``."""
    return AUTHORISED_AS.get(action, action)


def method_names(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # get_paginator("list_hosted_zones")
    return names


def static_actions(paths: list[Path]) -> set[str]:
    """svc:Operation for each boto3 client method a file calls on a service it uses."""
    actions = set()
    for path in paths:
        text = path.read_text()
        used = set(re.findall(r'client\("([a-z0-9]+)"\)', text))
        for service in used:
            client = boto3.client(service, region_name="us-east-1")
            mapping = client.meta.method_to_api_mapping
            prefix = client.meta.service_model.signing_name
            prefix = IAM_PREFIX.get(prefix, prefix)
            for name in method_names([path]) & set(mapping):
                actions.add(authorised_as(f"{prefix}:{mapping[name]}"))
    return actions


def checked_statements(document: dict[str, Any]) -> list[tuple[dict[str, Any], set[str]]]:
    """Each statement of an IAM policy document with its actions, after asserting the
    document's shape: version, effects, action syntax, and services this project uses."""
    assert document["Version"] == "2012-10-17"
    statements = []
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        actions = statement["Action"]
        listed = {actions} if isinstance(actions, str) else set(actions)
        for action in listed:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", action), action
            assert action.split(":")[0] in SERVICES, action
        statements.append((statement, listed))
    return statements


def allowed(policy: dict[str, Any]) -> set[str]:
    """Every action (or pattern) an Allow statement of ``policy`` names."""
    actions = set()
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def covers(patterns: set[str], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action, p) for p in patterns)


def resources_for(policy: dict[str, Any], action: str) -> list[str]:
    """The resources of the Allow statements that name ``action``."""
    found: list[str] = []
    for statement in policy["Statement"]:
        listed = statement["Action"]
        listed = [listed] if isinstance(listed, str) else listed
        if statement["Effect"] == "Allow" and covers(set(listed), action):
            resource = statement["Resource"]
            found += [resource] if isinstance(resource, str) else resource
    return found


def resource_allows(policy: dict[str, Any], action: str, arn: str) -> bool:
    """Whether an Allow statement grants ``action`` on ``arn`` (IAM wildcards)."""
    return any(fnmatch.fnmatchcase(arn, r) for r in resources_for(policy, action))


# -- escalation ------------------------------------------------------------------------------
# IAM actions that change what some identity may do. The deployer may use the role ones
# only on roles that carry the permissions boundary (IAM's iam:PermissionsBoundary key);
# every other one, never.
BOUNDARY_KEYED = {
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePermissionsBoundary",
}
NEVER = {
    "iam:CreateUser",
    "iam:PutUserPolicy",
    "iam:AttachUserPolicy",
    "iam:PutGroupPolicy",
    "iam:AttachGroupPolicy",
    "iam:AddUserToGroup",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:DeleteRolePermissionsBoundary",
    "iam:DeleteUserPermissionsBoundary",
    "iam:PutUserPermissionsBoundary",
    "sts:AssumeRole",
    "iam:UpdateRole",
}
BOUNDARY_MUST_DENY = {
    "iam:DeleteRolePermissionsBoundary",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
}


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def escalation_problems(
    deployer: dict[str, Any],
    boundary_arn: str,
    boundary: dict[str, Any],
    runtime: list[dict[str, Any]],
) -> list[str]:
    """Why the deployer could grant itself (or a role it runs) more than it has; [] when
    it cannot. Static: AWS evaluates the conditions, moto does not."""
    problems = []
    for statement in deployer["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = set(_listed(statement["Action"]))
        for action in sorted(BOUNDARY_KEYED | NEVER):
            if not covers(actions, action):
                continue
            if action in NEVER:
                problems.append(f"{statement.get('Sid')}: allows {action}")
                continue
            wanted = statement.get("Condition", {}).get("StringEquals", {})
            if wanted.get("iam:PermissionsBoundary") != boundary_arn:
                problems.append(f"{statement.get('Sid')}: {action} without the boundary")
    for action in sorted(BOUNDARY_MUST_DENY):
        target = "*" if action.endswith("PermissionsBoundary") else boundary_arn
        denied = any(
            s["Effect"] == "Deny"
            and covers(set(_listed(s["Action"])), action)
            and any(fnmatch.fnmatchcase(target, r) for r in _listed(s["Resource"]))
            and "Condition" not in s
            for s in deployer["Statement"]
        )
        if not denied:
            problems.append(f"no Deny of {action} on {target}")
    ceiling = allowed(boundary)
    for pattern in ceiling:
        if pattern == "*" or pattern.split(":")[0] in ("iam", "sts", "organizations"):
            problems.append(f"the boundary allows {pattern}")
    for document in runtime:
        for action in allowed(document):
            if not covers(ceiling, action):
                problems.append(f"the boundary cuts {action}, which a role needs")
    return problems

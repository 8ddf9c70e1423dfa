"""IAM roles from the JSON policy files in deploy/iam/ (placeholders like ``${Region}``)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from deploy.aws import Aws

POLICY_DIR = Path(__file__).resolve().parent.parent / "iam"


def policy(name: str, **values: str) -> dict[str, Any]:
    """deploy/iam/<name>.json with ``${Key}`` placeholders filled from ``values``."""
    text = (POLICY_DIR / f"{name}.json").read_text()
    return json.loads(string.Template(text).substitute(values))


def ensure_role(aws: Aws, name: str, trust: str, inline: dict[str, Any]) -> tuple[str, bool]:
    """A role with ``trust`` (a file name) and one inline policy; returns (arn, changed)."""
    iam = aws.client("iam")
    changed = False
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except Exception as err:
        if "NoSuchEntity" not in str(err):
            raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(policy(trust)),
            Description="made by rendezvous-deploy",
        )["Role"]
        changed = True
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
        if isinstance(current, str):
            from urllib.parse import unquote

            current = json.loads(unquote(current))
    except Exception as err:
        if "NoSuchEntity" not in str(err):
            raise
        current = None
    if current != inline:
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(inline))
        changed = True
    return str(role["Arn"]), changed


def delete_role(aws: Aws, name: str) -> bool:
    iam = aws.client("iam")
    try:
        iam.delete_role_policy(RoleName=name, PolicyName=name)
    except Exception as err:
        if "NoSuchEntity" not in str(err):
            raise
    try:
        iam.delete_role(RoleName=name)
    except Exception as err:
        if "NoSuchEntity" not in str(err):
            raise
        return False
    return True

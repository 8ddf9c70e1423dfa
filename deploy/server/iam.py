"""The server's IAM roles, through the shared :mod:`deploy.roles` (also used by pipeline).

Only deleting a role is the server's alone (``down --delete``); the pipeline never does.
"""

from __future__ import annotations

from typing import Any

from deploy import roles
from deploy.aws import Aws
from deploy.roles import POLICY_DIR, no_such_entity, policy

__all__ = ["POLICY_DIR", "delete_role", "ensure_role", "policy"]


def ensure_role(aws: Aws, name: str, trust: str, inline: dict[str, Any]) -> tuple[str, bool]:
    """A role trusting deploy/iam/<trust>.json with one inline policy; (arn, changed)."""
    return roles.ensure_role(aws, name, policy(trust), inline)


def delete_role(aws: Aws, name: str) -> bool:
    """Delete role ``name`` and its inline policy; False when there was no such role."""
    iam = aws.client("iam")
    try:
        iam.delete_role_policy(RoleName=name, PolicyName=name)
    except Exception as err:
        if not no_such_entity(err):
            raise
    try:
        iam.delete_role(RoleName=name)
    except Exception as err:
        if not no_such_entity(err):
            raise
        return False
    return True

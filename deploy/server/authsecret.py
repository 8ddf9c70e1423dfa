"""The server's auth secret in AWS Secrets Manager: made once by ``up``, read by the task.

The task gets it as ``RENDEZVOUS_AUTH_SECRET`` through the container definition's
``secrets`` (ECS reads it with the task *execution* role at start, so the value is in no
task definition, log or output). The value is random and never printed here; one secret
per line, the first mints, later ones still verify (how a rotation runs, see README).
"""

from __future__ import annotations

import secrets
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.server.network import MANAGED_BY, MANAGED_BY_TAG

#: The container variable the server reads its secrets from (rendezvous.credentials).
SECRET_ENV = "RENDEZVOUS_AUTH_SECRET"
#: Random bytes behind a new secret (token_urlsafe: 43 characters).
SECRET_BYTES = 32


def secret_name(name: str) -> str:
    """``rendezvous/<name>/auth-secret``: one per deployment (``--name``)."""
    return f"rendezvous/{name}/auth-secret"


def describe(aws: Aws, secret_id: str) -> dict[str, Any] | None:
    """The secret's metadata (never its value), or None when there is no such secret."""
    try:
        return dict(aws.client("secretsmanager").describe_secret(SecretId=secret_id))
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        return None


def find(aws: Aws, name: str, secret_id: str | None = None) -> str | None:
    """The ARN of ``name``'s secret (or of ``secret_id``), or None when there is none
    (or it is being deleted)."""
    found = describe(aws, secret_id or secret_name(name))
    if found is None or found.get("DeletedDate"):
        return None
    return str(found["ARN"])


def ensure(aws: Aws, name: str) -> tuple[str, bool]:
    """(ARN, created): the existing secret, or a new random one."""
    manager = aws.client("secretsmanager")
    secret_id = secret_name(name)
    found = describe(aws, secret_id)
    if found is not None:
        if found.get("DeletedDate"):
            raise DeployError(
                f"the auth secret {secret_id} is scheduled for deletion: restore it with "
                f"`aws secretsmanager restore-secret --secret-id {secret_id}` (or delete it "
                f"now with `aws secretsmanager delete-secret --secret-id {secret_id} "
                "--force-delete-without-recovery`) and run `up` again"
            )
        return str(found["ARN"]), False
    created = manager.create_secret(
        Name=secret_id,
        Description="rendezvous server auth secret (one per line: the first mints "
        "credentials, later lines still verify); made by rendezvous-deploy server up",
        SecretString=secrets.token_urlsafe(SECRET_BYTES),
        Tags=[{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
    )
    return str(created["ARN"]), True


def delete(aws: Aws, name: str, secret_id: str | None = None) -> bool:
    """Delete ``name``'s secret (or ``secret_id``) at once (credentials minted from it stop
    working with the server they were for); False when there was none. Asked first: a
    forced delete of a missing secret succeeds without saying so."""
    secret_id = secret_id or secret_name(name)
    if find(aws, name, secret_id) is None:
        return False
    try:
        aws.client("secretsmanager").delete_secret(
            SecretId=secret_id, ForceDeleteWithoutRecovery=True
        )
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        return False
    return True

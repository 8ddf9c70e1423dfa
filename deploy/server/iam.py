"""The server's IAM roles, through the shared :mod:`rendezvous_deploy.roles` (the pipeline's too).

Only deleting a role is the server's alone (``down --delete``); the pipeline never does.
"""

from __future__ import annotations

from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws
from rendezvous_deploy.roles import POLICY_DIR, no_such_entity, policy
from rendezvous_deploy.server.settings import ServerSettings

__all__ = ["POLICY_DIR", "delete_role", "ensure_role", "execution_policy", "policy"]
ECR_STATEMENTS = ("PullTheServerImage", "PullFromTheImagesRepository")
SECRET_STATEMENT = "ReadTheAuthSecret"
REDIS_SECRET_STATEMENT = "ReadTheRedisUrlSecret"


def execution_policy(
    settings: ServerSettings,
    image_uri: str,
    region: str,
    account: str,
    auth_secret_arn: str | None = None,
    redis_secret_arn: str | None = None,
) -> dict[str, Any]:
    """The task execution role's policy for ``image_uri``: pull from that image's ECR
    repository (whatever its name, account or region), or, for an image outside ECR
    (a public registry), no ECR rights at all; write the server's log group; read
    exactly the auth secret ``auth_secret_arn`` (None: auth off, no secret at all) and
    the --redis-url secret ``redis_secret_arn`` (None: none)."""
    from rendezvous_deploy.validate import ecr_image

    in_ecr = ecr_image(image_uri)
    image_account, image_region, repository = in_ecr or (account, region, settings.repository)
    document = policy(
        "task-execution",
        Region=region,
        Account=account,
        ImageRegion=image_region,
        ImageAccount=image_account,
        Repository=repository,
        LogGroup=settings.log_group,
        AuthSecretArn=auth_secret_arn or "",
        RedisSecretArn=redis_secret_arn or "",
    )
    dropped = (
        (ECR_STATEMENTS if in_ecr is None else ())
        + (() if auth_secret_arn else (SECRET_STATEMENT,))
        + (() if redis_secret_arn else (REDIS_SECRET_STATEMENT,))
    )
    document["Statement"] = [s for s in document["Statement"] if s.get("Sid") not in dropped]
    return document


def ensure_role(
    aws: Aws,
    name: str,
    trust: str,
    inline: dict[str, Any],
    boundary: str | None = None,
    on_change: roles.Change | None = None,
) -> tuple[str, bool]:
    """A role trusting deploy/iam/<trust>.json with one inline policy, under the
    permissions boundary ``boundary``; (arn, changed)."""
    return roles.ensure_role(
        aws, name, policy(trust), inline, boundary=boundary, on_change=on_change
    )


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

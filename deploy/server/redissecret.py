"""--redis-url in AWS Secrets Manager, as ``rendezvous/<name>/redis-url``.

The URL may hold a password, so the tasks get it as the auth secret reaches them: through
the container definition's ``secrets`` (ECS reads it at task start with the execution
role, which may read exactly this secret), never in the task definition, a log or the
output. ``up`` compares the stored URL with the given one and writes only a different
one; the task definition names the secret, not its value, so a changed URL also asks ECS
for a new deployment (the tasks read it only when they start).
"""

from __future__ import annotations

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server import authsecret
from rendezvous_deploy.server.network import MANAGED_BY, MANAGED_BY_TAG


def secret_name(name: str) -> str:
    return f"rendezvous/{name}/redis-url"


def ensure(aws: Aws, name: str, url: str) -> tuple[str, bool]:
    """(ARN, changed): the secret holding exactly ``url``."""
    manager = aws.client("secretsmanager")
    secret_id = secret_name(name)
    found = authsecret.describe(aws, secret_id)
    if found is None:
        created = manager.create_secret(
            Name=secret_id,
            Description="the Redis URL the rendezvous replicas share (--redis-url); made "
            "by rendezvous-deploy server up",
            SecretString=url,
            Tags=[{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
        )
        return str(created["ARN"]), True
    if found.get("DeletedDate"):
        raise DeployError(
            f"the secret {secret_id} is scheduled for deletion: delete it now with `aws "
            f"secretsmanager delete-secret --secret-id {secret_id} "
            "--force-delete-without-recovery` and run `up` again"
        )
    if manager.get_secret_value(SecretId=secret_id)["SecretString"] == url:
        return str(found["ARN"]), False
    manager.put_secret_value(SecretId=secret_id, SecretString=url)
    return str(found["ARN"]), True


def delete(aws: Aws, name: str) -> bool:
    """Delete the secret at once; False when there was none."""
    return authsecret.delete(aws, name, secret_name(name))

"""The pipeline's IAM: the functions' and the state machine's roles and what S3 they reach."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.pipeline.names import PipelineNames
from rendezvous_deploy.roles import policy

LAMBDA_TRUST = "trust-lambda"
STATES_TRUST = "pipeline-trust-states"
LAMBDA_POLICY = "pipeline-lambda"
STATES_POLICY = "pipeline-states"
ITEMS_FILE = "_pipeline/items.json"  # Initialize's ITEMS_NAME; the only key the Map reads
ROLE_DESCRIPTION = "made by rendezvous-deploy pipeline up"


def s3_location(text: str) -> tuple[str, str]:
    """``s3://bucket/prefix``, ``bucket/prefix`` or ``bucket`` -> (bucket, prefix)."""
    bucket, _, prefix = text.removeprefix("s3://").strip("/").partition("/")
    if not bucket:
        raise DeployError(f"{text!r} is not an S3 location: give a bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _objects(locations: Iterable[str], suffix: str = "*") -> list[str]:
    arns = []
    for location in locations:
        bucket, prefix = s3_location(location)
        arns.append(f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}{suffix}")
    return arns


def s3_access(
    read: tuple[str, ...] = (), write: tuple[str, ...] = (), *, any_bucket: bool = False
) -> dict[str, list[str]]:
    """The S3 resources of the roles: ``read`` locations (data, models, scripts) are
    read-only, ``write`` locations (results) read-write. Every bucket only when asked for
    (``any_bucket``): no location at all is an error, never a silent widening."""
    if any_bucket:
        return {
            "ListBuckets": ["arn:aws:s3:::*"],
            "ReadObjects": ["arn:aws:s3:::*/*"],
            "WriteObjects": ["arn:aws:s3:::*/*"],
            "ItemObjects": [f"arn:aws:s3:::*/*{ITEMS_FILE}"],
        }
    if not write:
        raise DeployError(
            "no S3 location for results: pass --results s3://BUCKET/PREFIX (written) and "
            "--data s3://BUCKET/PREFIX (read only) for the locations your payloads use, "
            "or --any-bucket to let the functions read and write every bucket"
        )
    names = sorted({s3_location(loc)[0] for loc in (*read, *write)})
    return {
        "ListBuckets": [f"arn:aws:s3:::{b}" for b in names],
        "ReadObjects": _objects((*read, *write)),
        "WriteObjects": _objects(write),
        "ItemObjects": _objects(write, f"*{ITEMS_FILE}"),
    }


def _runtime_values(
    region: str, account: str, names: PipelineNames, s3: dict[str, list[str]]
) -> dict[str, str | list[str]]:
    return {
        "Region": region,
        "Account": account,
        "Initialize": names.initialize,
        "Worker": names.worker,
        "Summarize": names.summarize,
        "StateMachine": names.state_machine,
        **s3,
    }


SECRET_STATEMENT = "ReadTheServersAuthSecret"


def lambda_policy(
    region: str,
    account: str,
    names: PipelineNames,
    s3: dict[str, list[str]],
    auth_secret_arn: str | None = None,
) -> dict[str, Any]:
    """The functions' role: their own log groups, and S3 as :func:`s3_access` says; with
    ``auth_secret_arn`` (Initialize's role only) reading exactly that secret too."""
    document = policy(
        LAMBDA_POLICY,
        **_runtime_values(region, account, names, s3),
        AuthSecretArn=auth_secret_arn or "",
    )
    if not auth_secret_arn:
        document["Statement"] = [
            s for s in document["Statement"] if s.get("Sid") != SECRET_STATEMENT
        ]
    return document


def states_policy(
    region: str, account: str, names: PipelineNames, s3: dict[str, list[str]]
) -> dict[str, Any]:
    """The state machine's role: invoke the three functions, run the Distributed Map's
    child executions of this state machine, read the Map's items file."""
    return policy(STATES_POLICY, **_runtime_values(region, account, names, s3))


def ensure_role(
    aws: Aws,
    name: str,
    trust: dict[str, Any],
    inline: dict[str, Any],
    boundary: str | None = None,
    on_change: roles.Change | None = None,
) -> tuple[str, bool]:
    """A role with the ``trust`` policy and one inline policy named after it, under the
    permissions boundary ``boundary``; (arn, changed)."""
    return roles.ensure_role(
        aws,
        name,
        trust,
        inline,
        description=ROLE_DESCRIPTION,
        boundary=boundary,
        on_change=on_change,
    )

"""Checks `pipeline run` makes against the deployment before it starts anything: whether
the payload stays inside the S3 locations the functions may use, and how long one
execution may take (the default of ``run --timeout``)."""

from __future__ import annotations

from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, error_code
from rendezvous_deploy.pipeline.names import PipelineNames, UpSettings


def _allows(document: dict[str, Any], action: str, arn: str) -> bool:
    """Whether an Allow statement of ``document`` names ``action`` on ``arn`` (IAM
    wildcards, the way up writes its policies: no NotAction, no conditions)."""
    import fnmatch

    for statement in document.get("Statement", []):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if (
            statement.get("Effect") == "Allow"
            and action in actions
            and any(fnmatch.fnmatchcase(arn, r) for r in resources)
        ):
            return True
    return False


def outside_scope(aws: Aws, names: PipelineNames, payload: dict[str, Any]) -> list[str]:
    """What ``payload`` would read or write that the functions' role does not allow
    (the --data and --results of `pipeline up`): found before starting, not as an
    AccessDenied in a rank minutes later. [] when the role is missing (up not run)."""
    try:
        found = aws.client("iam").get_role_policy(
            RoleName=names.lambda_role, PolicyName=names.lambda_role
        )["PolicyDocument"]
    except Exception as err:
        if error_code(err) != "NoSuchEntity":
            raise
        return []
    document = roles.decode_document(found) or {}
    bucket = str(payload.get("bucket") or "")
    data_bucket = str(payload.get("data_bucket") or bucket)
    data_prefix = str(payload.get("data_prefix") or "").strip("/")
    result_path = str(payload.get("result_path") or "").strip("/")
    wanted = [
        (
            "s3:GetObject",
            f"{data_bucket}/{data_prefix + '/' if data_prefix else ''}1.pt",
            "read data",
        ),
        (
            "s3:PutObject",
            f"{bucket}/{result_path + '/' if result_path else ''}r/0.json",
            "write results",
        ),
    ]
    return [
        f"{what} at s3://{where.rsplit('/', 1)[0]}/"
        for action, where, what in wanted
        if not _allows(document, action, f"arn:aws:s3:::{where}")
    ]


EXECUTION_MARGIN_S = 60.0


def execution_budget(aws: Aws, names: PipelineNames) -> float:
    """How long one execution may take: the deployed worker's timeout plus Initialize's
    and Summarize's, plus a margin for Step Functions (the default of ``run --timeout``)."""
    lam = aws.client("lambda")
    total = EXECUTION_MARGIN_S
    for function, fallback in (
        (names.initialize, UpSettings.small_timeout_s),
        (names.worker, UpSettings.worker_timeout_s),
        (names.summarize, UpSettings.small_timeout_s),
    ):
        try:
            total += float(lam.get_function_configuration(FunctionName=function)["Timeout"])
        except Exception as err:
            if error_code(err) != "ResourceNotFoundException":
                raise
            total += fallback
    return total

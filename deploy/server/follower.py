"""Make the record follow the task: an EventBridge rule on ECS task state changes invokes
a small Lambda (deploy/refresher/) that runs the same refresh code as ``dns-refresh``.

Chosen over "the task updates its own record" so the server image needs no AWS rights
and no AWS code, and a task that cannot start cannot touch DNS.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server import iam
from rendezvous_deploy.server.settings import ServerSettings

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # rendezvous_deploy (deploy/ in the repo)
#: The refresher's modules, zipped as rendezvous_deploy/<file>.
FUNCTION_FILES = (
    "__init__.py",
    "aws.py",
    "server/__init__.py",
    "server/record.py",
    "server/tasks.py",
    "refresher/__init__.py",
    "refresher/handler.py",
)
HANDLER = "rendezvous_deploy.refresher.handler.handler"
RUNTIME = "python3.12"


def function_zip() -> bytes:
    """The refresher's code as a deterministic zip (same code, same bytes, same hash)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in FUNCTION_FILES:
            info = zipfile.ZipInfo(f"rendezvous_deploy/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (PACKAGE_DIR / name).read_bytes())
    return buffer.getvalue()


def code_sha256(code: bytes) -> str:
    return base64.b64encode(hashlib.sha256(code).digest()).decode()


def event_pattern(cluster_arn: str, service: str) -> dict[str, Any]:
    return {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [cluster_arn],
            "group": [f"service:{service}"],
            "lastStatus": ["RUNNING"],
        },
    }


def ensure(
    aws: Aws,
    settings: ServerSettings,
    *,
    account: str,
    cluster_arn: str,
    zone_id: str,
    boundary: str | None = None,
    on_change: roles.Change | None = None,
) -> bool:
    """Role, function, rule, target and invoke permission; returns whether anything changed."""
    region = aws.region_name
    runtime_policy = iam.policy(
        "refresher",
        Region=region,
        Account=account,
        Cluster=settings.cluster_name,
        HostedZoneId=zone_id,
        RecordName=settings.fqdn.rstrip("."),
        Function=settings.refresher_function,
    )
    role_arn, changed = iam.ensure_role(
        aws, settings.refresher_role, "trust-lambda", runtime_policy, boundary, on_change
    )
    function_arn, function_changed = _ensure_function(aws, settings, role_arn, zone_id)
    changed |= function_changed
    changed |= _ensure_rule(aws, settings, cluster_arn, function_arn)
    return changed


def _environment(settings: ServerSettings, zone_id: str) -> dict[str, str]:
    return {
        "RENDEZVOUS_CLUSTER": settings.cluster_name,
        "RENDEZVOUS_SERVICE": settings.service_name,
        "RENDEZVOUS_RECORD": settings.fqdn,
        "RENDEZVOUS_ZONE": zone_id,
        "RENDEZVOUS_TTL": str(settings.ttl),
    }


def _ensure_function(
    aws: Aws, settings: ServerSettings, role_arn: str, zone_id: str
) -> tuple[str, bool]:
    lam = aws.client("lambda")
    code = function_zip()
    environment = {"Variables": _environment(settings, zone_id)}
    try:
        config = lam.get_function(FunctionName=settings.refresher_function)["Configuration"]
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
        config = None
    if config is None:
        deadline = time.monotonic() + 60
        while True:
            try:  # a new role takes a few seconds to become assumable by Lambda
                created = lam.create_function(
                    FunctionName=settings.refresher_function,
                    Runtime=RUNTIME,
                    Role=role_arn,
                    Handler=HANDLER,
                    Code={"ZipFile": code},
                    Timeout=60,
                    MemorySize=128,
                    Environment=environment,
                    Description=f"keeps {settings.fqdn} on the running {settings.name} task",
                )
                return str(created["FunctionArn"]), True
            except Exception as err:
                if "cannot be assumed" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(3)
    changed = False
    if config.get("CodeSha256") != code_sha256(code):
        lam.update_function_code(FunctionName=settings.refresher_function, ZipFile=code)
        changed = True
    wanted = {"Role": role_arn, "Handler": HANDLER, "Runtime": RUNTIME}
    current_env = config.get("Environment", {}).get("Variables", {})
    if any(config.get(k) != v for k, v in wanted.items()) or current_env != environment[
        "Variables"
    ]:
        _wait_function_idle(aws, settings.refresher_function)
        lam.update_function_configuration(
            FunctionName=settings.refresher_function, Environment=environment, **wanted
        )
        changed = True
    return str(config["FunctionArn"]), changed


def _wait_function_idle(aws: Aws, name: str) -> None:
    """Lambda refuses a configuration update while a code update is in progress."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        config = aws.client("lambda").get_function(FunctionName=name)["Configuration"]
        if config.get("LastUpdateStatus", "Successful") != "InProgress":
            return
        time.sleep(2)
    raise DeployError(f"Lambda function {name} stayed busy updating for 60 s: run `up` again")


def _ensure_rule(
    aws: Aws, settings: ServerSettings, cluster_arn: str, function_arn: str
) -> bool:
    events = aws.client("events")
    pattern = event_pattern(cluster_arn, settings.service_name)
    changed = False
    try:
        rule = events.describe_rule(Name=settings.refresher_rule)
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
        rule = None
    if (
        rule is None
        or json.loads(rule.get("EventPattern", "{}")) != pattern
        or rule.get("State") != "ENABLED"
    ):
        rule = events.put_rule(
            Name=settings.refresher_rule,
            EventPattern=json.dumps(pattern),
            State="ENABLED",
            Description=f"{settings.name}: a task of the service is RUNNING -> refresh DNS",
        )
        changed = True
    rule_arn = rule.get("Arn") or rule.get("RuleArn")
    targets = events.list_targets_by_rule(Rule=settings.refresher_rule).get("Targets", [])
    if [t.get("Arn") for t in targets] != [function_arn]:
        events.put_targets(
            Rule=settings.refresher_rule, Targets=[{"Id": "dns-refresher", "Arn": function_arn}]
        )
        changed = True
    statement_id = f"events-{settings.refresher_rule}"
    try:
        found = aws.client("lambda").get_policy(FunctionName=settings.refresher_function)
        allowed = statement_id in found.get("Policy", "")
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
        allowed = False
    if not allowed:
        aws.client("lambda").add_permission(
            FunctionName=settings.refresher_function,
            StatementId=statement_id,
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=rule_arn,
        )
        changed = True
    return changed


def present(aws: Aws, settings: ServerSettings) -> bool:
    """Whether any part of the follower exists (looked up, so nothing is deleted in vain)."""
    try:
        aws.client("events").describe_rule(Name=settings.refresher_rule)
        return True
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
    try:
        aws.client("lambda").get_function(FunctionName=settings.refresher_function)
        return True
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
    try:
        aws.client("iam").get_role(RoleName=settings.refresher_role)
        return True
    except Exception as err:
        if not roles.no_such_entity(err):
            raise
    return False


def remove(aws: Aws, settings: ServerSettings) -> list[str]:
    """Delete rule, targets, function and role; returns what was removed."""
    removed = []
    events = aws.client("events")
    try:
        events.remove_targets(Rule=settings.refresher_rule, Ids=["dns-refresher"])
        events.delete_rule(Name=settings.refresher_rule)
        removed.append(f"rule {settings.refresher_rule}")
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
    try:
        aws.client("lambda").delete_function(FunctionName=settings.refresher_function)
        removed.append(f"function {settings.refresher_function}")
    except Exception as err:
        if "ResourceNotFound" not in str(err):
            raise
    if iam.delete_role(aws, settings.refresher_role):
        removed.append(f"role {settings.refresher_role}")
    return removed

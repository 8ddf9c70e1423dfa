"""Lambda entry point: on "ECS Task State Change" to RUNNING, point the record at the task.

Runs the same :func:`rendezvous_deploy.server.record.refresh` as ``rendezvous-deploy server
dns-refresh``. Configuration comes from the function's environment, set by ``server up``.
Only boto3 (present in the Lambda runtime) is needed.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rendezvous_deploy.aws import Aws
from rendezvous_deploy.server.record import refresh

ENV_KEYS = ("RENDEZVOUS_CLUSTER", "RENDEZVOUS_SERVICE", "RENDEZVOUS_RECORD", "RENDEZVOUS_ZONE")


def handler(event: dict[str, Any], context: Any = None, aws: Aws | None = None) -> dict[str, Any]:
    """Refresh the record for a RUNNING task of our service; ignore every other event."""
    missing = [key for key in ENV_KEYS if not os.environ.get(key)]
    if missing:
        raise RuntimeError(f"refresher misconfigured: {', '.join(missing)} not set")
    service = os.environ["RENDEZVOUS_SERVICE"]
    detail = event.get("detail", {})
    if event.get("detail-type") != "ECS Task State Change":
        return {"skipped": f"not a task state change: {event.get('detail-type')}"}
    if detail.get("group") != f"service:{service}" or detail.get("lastStatus") != "RUNNING":
        return {"skipped": f"{detail.get('group')} is {detail.get('lastStatus')}"}
    result = refresh(
        aws or Aws(),
        cluster=os.environ["RENDEZVOUS_CLUSTER"],
        service=service,
        record=os.environ["RENDEZVOUS_RECORD"],
        zone=os.environ["RENDEZVOUS_ZONE"],
        ttl=int(os.environ.get("RENDEZVOUS_TTL", "60")),
        task_arn=detail.get("taskArn"),
        wait_poll=None,
    )
    outcome = {"ip": result.ip, "changed": result.changed, "task": result.task_arn}
    print(json.dumps(outcome))  # one line in the function's CloudWatch log
    return outcome

"""Running the pipeline on AWS: start executions, wait for them, collect their REPORT lines."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from rendezvous_deploy.aws import Aws, error_code
from rendezvous_deploy.pipeline.names import PipelineNames
from rendezvous_deploy.pipeline.report import ReportLine, parse_report_line


def find_state_machine(aws: Aws, name: str) -> str | None:
    sfn = aws.client("stepfunctions")
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page.get("stateMachines", []):
            if machine["name"] == name:
                return str(machine["stateMachineArn"])
    return None


def execution_name(world_size: int, now: datetime | None = None) -> str:
    """``ws8-20260101T120000-1a2b3c``: sortable, unique, a valid run_id (<= 80 chars)."""
    now = now or datetime.now(timezone.utc)
    salt = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:6]
    return f"ws{world_size}-{now:%Y%m%dT%H%M%S}-{salt}"


def start_execution(
    aws: Aws, machine_arn: str, payload: dict[str, Any], world_size: int
) -> dict[str, Any]:
    """Start one execution of ``payload`` at ``world_size``; its name is the run_id.

    Each execution writes under its own ``<result_path>/<run_id>`` (as local runs do), so
    two world sizes, or two sweeps, never overwrite each other's items and results.
    """
    name = execution_name(world_size)
    base = str(payload.get("result_path") or "").strip("/")
    result_path = f"{base}/{name}" if base else name
    body = {**payload, "world_size": world_size, "run_id": name, "result_path": result_path}
    started = aws.client("stepfunctions").start_execution(
        stateMachineArn=machine_arn, name=name, input=json.dumps(body)
    )
    return {
        "world_size": world_size,
        "run_id": name,
        "result_path": result_path,
        "execution_arn": started["executionArn"],
    }


TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def wait_execution(
    aws: Aws, arn: str, timeout_s: float, on_status: Callable[[str], None], poll_s: float = 2.0
) -> dict[str, Any]:
    """Poll until the execution ends or ``timeout_s`` passes (then the last status)."""
    sfn = aws.client("stepfunctions")
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=arn)
        status = described["status"]
        on_status(status)
        if status in TERMINAL or time.monotonic() >= deadline:
            return described
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def failure_message(described: dict[str, Any]) -> str:
    """The failed rank's message from an execution's error/cause."""
    cause = described.get("cause") or ""
    try:
        parsed = json.loads(cause)
        cause = parsed.get("errorMessage") or parsed.get("Cause") or cause
    except (ValueError, AttributeError):
        pass
    return f"{described.get('error') or 'failed'}: {cause}".strip()


def rank_failure(aws: Aws, execution_arn: str) -> str | None:
    """The first failed rank's own message, from the Distributed Map's child executions.

    The parent execution only says the Map exceeded its tolerated failures; children run
    as STANDARD executions (see the ASL) so their errors can be read back here.
    """
    sfn = aws.client("stepfunctions")
    try:
        map_runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        for map_run in map_runs:
            failed = sfn.list_executions(
                mapRunArn=map_run["mapRunArn"], statusFilter="FAILED", maxResults=1
            ).get("executions", [])
            for child in failed:
                return failure_message(sfn.describe_execution(executionArn=child["executionArn"]))
    except Exception:  # best effort: the parent's own error is reported anyway
        return None
    return None


# -- report ----------------------------------------------------------------------------------


def _millis(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(float(value) * 1000)


def log_events(
    aws: Aws, group: str, start_ms: int, end_ms: int, pattern: str | None = None
) -> list[str]:
    """Every message in ``group`` between the times (all pages); [] when there is no group."""
    logs = aws.client("logs")
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "endTime": end_ms}
    if pattern:
        kwargs["filterPattern"] = pattern
    messages: list[str] = []
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            messages.extend(event["message"] for event in page.get("events", []))
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
    return messages


def report_lines_for_run(messages: Iterable[str], run_id: str) -> list[ReportLine]:
    """The REPORT lines of the requests that logged ``PIPELINE_RUN <run_id>``. Pure."""
    messages = list(messages)
    marker = f"PIPELINE_RUN {run_id} "
    request_ids = set()
    for message in messages:
        if message.startswith(marker) and "RequestId: " in message:
            request_ids.add(message.rsplit("RequestId: ", 1)[1].strip())
    lines = []
    for message in messages:
        if message.startswith("REPORT "):
            parsed = parse_report_line(message)
            if parsed.request_id in request_ids:
                lines.append(parsed)
    return lines


def collect_execution(aws: Aws, names: PipelineNames, execution_arn: str) -> dict[str, Any]:
    """World size, run id and the REPORT lines of every Lambda the execution ran."""
    described = aws.client("stepfunctions").describe_execution(executionArn=execution_arn)
    payload = json.loads(described.get("input") or "{}")
    run_id = str(payload.get("run_id") or described["name"])
    start = _millis(described["startDate"]) - 60_000
    stop = described.get("stopDate") or datetime.now(timezone.utc)
    end = _millis(stop + timedelta(minutes=5) if isinstance(stop, datetime) else stop)
    lines: list[ReportLine] = []
    for function in names.functions():
        messages = log_events(aws, f"/aws/lambda/{function}", start, end)
        lines += report_lines_for_run(messages, run_id)
    return {
        "execution_arn": execution_arn,
        "run_id": run_id,
        "status": described["status"],
        "world_size": int(payload.get("world_size") or 0),
        "lines": lines,
        "input": payload,
    }

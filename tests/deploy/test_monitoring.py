"""CloudWatch dashboard and alarms of ``server up``, against moto; EMF settings of the task.

The metric names and the dimension the dashboard and alarms use are checked against the
EMF lines a real server process prints with the task definition's environment: a widget
or alarm on a metric the server never sends would fail here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3

from rendezvous_deploy.server import commands, monitoring, taskdef
from rendezvous_deploy.server.settings import ServerSettings
from tests.deploy.conftest import Stack
from tests.monitoring.load import drive_load
from tests.monitoring.stack import rendezvous_server


def cloudwatch(stack: Stack) -> Any:
    return boto3.client("cloudwatch", endpoint_url=stack.endpoint, region_name="us-east-1")


def alarm_names(settings: ServerSettings) -> list[str]:
    return [monitoring.alarm_name(settings, a) for a in monitoring.ALARMS]


def emf_lines_of_the_task(tmp_path: Path, settings: ServerSettings) -> list[dict[str, Any]]:
    """EMF documents of a real server started with the task definition's environment."""
    wanted = taskdef.desired(settings, "img", "arn:aws:iam::1:role/r", "us-east-1")
    env = {e["name"]: e["value"] for e in wanted["containerDefinitions"][0]["environment"]}
    assert env["RENDEZVOUS_EMF_INTERVAL"] == str(monitoring.EMF_INTERVAL)
    env["RENDEZVOUS_EMF_INTERVAL"] = "1"  # the task's 30 s is too slow for a test
    env.pop("RENDEZVOUS_PORT"), env.pop("RENDEZVOUS_HTTP_PORT")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RENDEZVOUS_")}
    with rendezvous_server(
        tmp_path / "server.log", "--peer-timeout", "0.5", "--drain-timeout", "2",
        stdout=subprocess.PIPE, env={**base, **env},
    ) as server:  # fmt: skip
        asyncio.run(drive_load(server.port))
        time.sleep(1.2)
        server.proc.terminate()
        out, _ = server.proc.communicate(timeout=20)
    return [json.loads(line) for line in out.splitlines()]


def test_dashboard_and_alarms_use_what_the_task_sends(tmp_path: Path, stack: Stack) -> None:
    settings = stack.settings(name="team-a")
    documents = emf_lines_of_the_task(tmp_path, settings)
    sent = set()
    for doc in documents:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == monitoring.NAMESPACE
        assert directive["Dimensions"] == [["Service"]] and doc["Service"] == "team-a"
        sent |= {m["Name"] for m in directive["Metrics"]}
    body = monitoring.dashboard_body(settings, "us-east-1", "123456789012")
    charted = set()
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            namespace, name, dimension, value, _ = metric
            assert (namespace, dimension, value) == (monitoring.NAMESPACE, "Service", "team-a")
            charted.add(name)
    alarmed = {a.metric for a in monitoring.ALARMS}
    assert charted <= sent and alarmed <= sent
    assert charted == sent, f"metrics sent but not charted: {sent - charted}"


def test_up_creates_them_down_removes_them(stack: Stack, quiet: Any) -> None:
    settings = stack.settings()
    client = cloudwatch(stack)
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), settings, quiet)
    body = json.loads(client.get_dashboard(DashboardName="rendezvous")["DashboardBody"])
    assert body == monitoring.dashboard_body(settings, "us-east-1", "123456789012")
    alarms = {a["AlarmName"]: a for a in client.describe_alarms()["MetricAlarms"]}
    assert sorted(alarms) == sorted(alarm_names(settings))
    unhealthy = alarms["rendezvous-unhealthy"]
    assert unhealthy["Namespace"] == "Rendezvous" and unhealthy["MetricName"] == "Ready"
    assert unhealthy["Dimensions"] == [{"Name": "Service", "Value": "rendezvous"}]
    assert unhealthy["TreatMissingData"] == "breaching"  # no metrics: the task is gone
    assert alarms["rendezvous-refusals"]["Threshold"] == 30.0
    assert alarms["rendezvous-expirations"]["EvaluationPeriods"] == 15

    aws = stack.aws()
    commands.down(aws, settings, quiet, delete=False, remove_record=False)
    assert client.describe_alarms()["MetricAlarms"] == []
    assert client.list_dashboards()["DashboardEntries"] == []
    assert {"cloudwatch:DeleteDashboards", "cloudwatch:DeleteAlarms"} <= aws.actions
    again = stack.aws()
    commands.down(again, settings, quiet, delete=True, remove_record=False)
    assert not {a for a in again.actions if a.startswith("cloudwatch:Delete")}


def test_up_restores_an_alarm_changed_by_hand(stack: Stack, quiet: Any) -> None:
    settings = stack.settings()
    client = cloudwatch(stack)
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), settings, quiet)
        changed = monitoring.alarm_arguments(settings, monitoring.ALARMS[1])
        client.put_metric_alarm(**{**changed, "Threshold": 1000.0})
        aws = stack.aws()
        commands.up(aws, settings, quiet)
    (alarm,) = client.describe_alarms(AlarmNames=["rendezvous-refusals"])["MetricAlarms"]
    assert alarm["Threshold"] == 30.0
    puts = sorted(a for a in aws.actions if a.startswith("cloudwatch:Put"))
    assert puts == ["cloudwatch:PutMetricAlarm"]  # the dashboard was left alone


def test_status_shows_the_last_hours_pairings_and_refusals(stack: Stack, quiet: Any) -> None:
    settings = stack.settings()
    aws = stack.aws()
    with stack.fargate(), stack.propagation():
        commands.up(aws, settings, quiet)
        before = commands.status(stack.aws(), settings)
    assert before["pairings (last hour)"].startswith("no metrics")
    # CloudWatch Logs would extract these from the task's EMF lines; moto does not read
    # logs, so the same data points go in through PutMetricData.
    now = dt.datetime.now(dt.timezone.utc)
    dimensions = [{"Name": "Service", "Value": "rendezvous"}]
    data = [
        {"MetricName": name, "Dimensions": dimensions, "Value": value, "Unit": "Count",
         "Timestamp": now - dt.timedelta(minutes=minutes)}
        for name, value, minutes in [("Pairings", 5, 50), ("Pairings", 7, 5),
                                     ("Refusals", 2, 10), ("Pairings", 100, 90)]
    ]  # fmt: skip
    cloudwatch(stack).put_metric_data(Namespace="Rendezvous", MetricData=data)
    with stack.fargate():
        after = commands.status(stack.aws(), settings)
    assert after["pairings (last hour)"] == "12"  # the one 90 minutes ago is outside
    assert after["refusals (last hour)"] == "2"

"""CloudWatch for the Fargate server: a dashboard and alarms over its EMF metrics.

The server task prints its metrics as Embedded Metric Format lines (``--emf-interval``,
set in the task definition), so CloudWatch Logs files them under the ``Rendezvous``
namespace with the dimension ``Service = <stack name>``. ``up`` puts a dashboard and three
alarms on them (idempotent: compared first, written only when different); ``down`` removes
them (an "unhealthy" alarm on a service scaled to zero would only ring); ``status`` reads
the last hour's pairings and refusals.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from rendezvous_deploy.aws import Aws, error_code
from rendezvous_deploy.server.settings import ServerSettings

NAMESPACE = "Rendezvous"
EMF_INTERVAL = 30
"""Seconds between EMF lines in the task: two per minute, so no one-minute period of the
"unhealthy" alarm is empty while the server runs."""
PERIOD = 60


@dataclass(frozen=True)
class Alarm:
    suffix: str
    metric: str
    statistic: str
    comparison: str
    threshold: float
    periods: int
    missing: str  # TreatMissingData
    description: str


ALARMS = (
    Alarm(
        "unhealthy", "Ready", "Minimum", "LessThanThreshold", 1, 3, "breaching",
        "The rendezvous server was not ready (draining, at its connection cap) or sent no "
        "metrics (task down) for 3 minutes.",
    ),
    Alarm(
        "refusals", "Refusals", "Sum", "GreaterThanThreshold", 30, 10, "notBreaching",
        "More than 30 refused requests a minute (0.5/s) for 10 minutes; the server's "
        "JSON log names each refusal's reason.",
    ),
    Alarm(
        "expirations", "Expirations", "Sum", "GreaterThanThreshold", 6, 15, "notBreaching",
        "More than 6 waiting clients a minute (0.1/s) reached their timeout without a peer "
        "for 15 minutes: peers use different names, start too far apart, or reach another "
        "server.",
    ),
)  # fmt: skip


def dashboard_name(settings: ServerSettings) -> str:
    return settings.name


def alarm_name(settings: ServerSettings, alarm: Alarm) -> str:
    return f"{settings.name}-{alarm.suffix}"


def task_environment(settings: ServerSettings) -> list[tuple[str, str]]:
    """The server's EMF settings for the task definition (stdout goes to CloudWatch Logs)."""
    return [
        ("RENDEZVOUS_EMF_INTERVAL", str(EMF_INTERVAL)),
        ("RENDEZVOUS_EMF_NAMESPACE", NAMESPACE),
        ("RENDEZVOUS_EMF_SERVICE", settings.name),
    ]


def _dimensions(settings: ServerSettings) -> list[dict[str, str]]:
    return [{"Name": "Service", "Value": settings.name}]


def alarm_arguments(settings: ServerSettings, alarm: Alarm) -> dict[str, Any]:
    """put_metric_alarm keyword arguments for one alarm."""
    return {
        "AlarmName": alarm_name(settings, alarm),
        "AlarmDescription": alarm.description,
        "Namespace": NAMESPACE,
        "MetricName": alarm.metric,
        "Dimensions": _dimensions(settings),
        "Statistic": alarm.statistic,
        "Period": PERIOD,
        "EvaluationPeriods": alarm.periods,
        "DatapointsToAlarm": alarm.periods,
        "Threshold": float(alarm.threshold),
        "ComparisonOperator": alarm.comparison,
        "TreatMissingData": alarm.missing,
    }


def dashboard_body(settings: ServerSettings, region: str, account: str) -> dict[str, Any]:
    """The dashboard: pairings, waits, refusals, lost waits, capacity, alarm states."""
    service = ["Service", settings.name]

    def widget(x: int, y: int, title: str, metrics: list[list[Any]], **extra: Any) -> dict:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "view": "timeSeries",
                "period": PERIOD,
                "metrics": metrics,
                **extra,
            },
        }

    def metric(name: str, stat: str, label: str, **options: str) -> list[Any]:
        return [NAMESPACE, name, *service, {"stat": stat, "label": label, **options}]

    alarms = [
        f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm_name(settings, a)}" for a in ALARMS
    ]
    return {
        "widgets": [
            widget(0, 0, "Pairings and requests per minute", [
                metric("Pairings", "Sum", "pairings"), metric("Requests", "Sum", "requests")]),
            widget(12, 0, "Pairing wait, mean of the minute (s)", [
                metric("PairingWaitMean", "Average", "mean wait (s)")]),
            widget(0, 6, "Refusals, expirations, abandoned waits per minute", [
                metric("Refusals", "Sum", "refusals"),
                metric("Expirations", "Sum", "expirations"),
                metric("AbandonedWaits", "Sum", "abandoned waits")]),
            widget(12, 6, "Waiting clients and open connections", [
                metric("WaitingClients", "Maximum", "waiting clients"),
                metric("OpenConnections", "Maximum", "open connections")]),
            widget(0, 12, "Connections used (% of --max-connections) and readiness", [
                metric("ConnectionsUsed", "Maximum", "connections used %"),
                metric("Ready", "Minimum", "ready (1) / not ready (0)", yAxis="right")]),
            {
                "type": "alarm",
                "x": 12,
                "y": 12,
                "width": 12,
                "height": 6,
                "properties": {"title": "Alarms", "alarms": alarms},
            },
        ]
    }  # fmt: skip


def _dashboard(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    """The dashboard's current body, or None when there is none."""
    try:
        body = aws.client("cloudwatch").get_dashboard(DashboardName=dashboard_name(settings))
    except Exception as err:
        if error_code(err) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        return None
    return dict(json.loads(body["DashboardBody"]))


def _ensure_dashboard(aws: Aws, settings: ServerSettings, account: str) -> bool:
    wanted = dashboard_body(settings, aws.region_name, account)
    if _dashboard(aws, settings) == wanted:
        return False
    aws.client("cloudwatch").put_dashboard(
        DashboardName=dashboard_name(settings), DashboardBody=json.dumps(wanted)
    )
    return True


def _existing_alarms(aws: Aws, settings: ServerSettings) -> dict[str, dict[str, Any]]:
    names = [alarm_name(settings, a) for a in ALARMS]
    found = aws.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def _same(existing: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    if existing is None:
        return False
    return all(existing.get(key) == value for key, value in wanted.items())


def ensure(aws: Aws, settings: ServerSettings, account: str) -> list[tuple[str, bool]]:
    """Dashboard and alarms as they should be; (progress line, changed) for each."""
    steps = [
        (
            f"CloudWatch dashboard {dashboard_name(settings)}",
            _ensure_dashboard(aws, settings, account),
        )
    ]
    existing = _existing_alarms(aws, settings)
    cloudwatch = aws.client("cloudwatch")
    for alarm in ALARMS:
        wanted = alarm_arguments(settings, alarm)
        changed = not _same(existing.get(wanted["AlarmName"]), wanted)
        if changed:
            cloudwatch.put_metric_alarm(**wanted)
        steps.append((f"CloudWatch alarm {wanted['AlarmName']}", changed))
    return steps


def remove(aws: Aws, settings: ServerSettings) -> list[str]:
    """Delete the dashboard and the alarms that exist; what was removed."""
    cloudwatch = aws.client("cloudwatch")
    removed = []
    if _dashboard(aws, settings) is not None:
        cloudwatch.delete_dashboards(DashboardNames=[dashboard_name(settings)])
        removed.append(f"CloudWatch dashboard {dashboard_name(settings)}")
    alarms = sorted(_existing_alarms(aws, settings))
    if alarms:
        cloudwatch.delete_alarms(AlarmNames=alarms)
        removed += [f"CloudWatch alarm {name}" for name in alarms]
    return removed


def last_hour(aws: Aws, settings: ServerSettings, now: dt.datetime | None = None) -> dict:
    """Pairings and refusals of the last hour from the EMF metrics (for ``status``)."""
    end = now or dt.datetime.now(dt.timezone.utc)
    queries = [
        {
            "Id": metric.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": _dimensions(settings),
                },
                "Period": 3600,
                "Stat": "Sum",
            },
        }
        for metric in ("Pairings", "Refusals")
    ]
    results = aws.client("cloudwatch").get_metric_data(
        MetricDataQueries=queries, StartTime=end - dt.timedelta(hours=1), EndTime=end
    )["MetricDataResults"]
    sums = {r["Id"]: sum(r.get("Values", [])) for r in results}
    seen = any(r.get("Values") for r in results)

    def shown(key: str) -> str:
        return f"{sums.get(key, 0):.0f}" if seen else "no metrics (EMF off or no task yet)"

    return {
        "pairings (last hour)": shown("pairings"),
        "refusals (last hour)": shown("refusals"),
    }

"""The dashboard's queries and the alert rules, proven on a real Prometheus.

One server process and one Prometheus (scraping it every second) per module. After a
little load (three pairings, a refusal, an expiry, an abandoned wait) has been scraped,
every dashboard query and every alert expression must be valid and return data: a query
that names a metric the server does not export returns nothing and fails here.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.load import drive_load
from tests.monitoring.stack import (
    DASHBOARD,
    MONITORING,
    RULE_TESTS,
    RULES,
    Prometheus,
    Server,
    prometheus,
    rendezvous_server,
    tool,
)

RATE_INTERVAL = "1m"
RANGE = "5m"


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows included."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in panels(board["panels"])
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def concrete(expr: str, instance: str) -> str:
    """The query Grafana would send, its variables filled in."""
    for variable, value in (
        ("$__rate_interval", RATE_INTERVAL),
        ("$__range", RANGE),
        ("$instance", instance),
    ):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown dashboard variable left in {expr!r}"
    return expr


COMPARISON = re.compile(r"^(?P<query>.+?)\s*(?:==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$", re.DOTALL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Prometheus, float]]:
    """(server, Prometheus, evaluation time): the load is scraped by that time."""
    directory = tmp_path_factory.mktemp("prometheus")
    with (
        rendezvous_server(directory / "server.log", "--peer-timeout", "0.5") as server,
        prometheus(directory, server.instance) as api,
    ):
        target = f'instance="{server.instance}", job="rendezvous"'
        # two scrapes before the load, so rates see every counter go up
        api.wait_until(f"count_over_time(up{{{target}}}[1m]) >= 2", "two scrapes")
        assert api.value(f"up{{{target}}}") == 1
        asyncio.run(drive_load(server.port))
        api.wait_until(f"rendezvous_abandoned_total{{{target}}} >= 1", "the load")
        api.wait_until(f"sum(rendezvous_pairings_total{{{target}}}) >= 3", "three pairings")
        time.sleep(2.5)  # two more scrapes after the load
        yield server, api, time.time()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_dashboard_query_returns_data(stack, title: str, expr: str) -> None:
    server, api, at = stack
    answer = api.query(concrete(expr, server.instance), at)
    assert answer["status"] == "success", f"{title}: {answer.get('error')}"
    result = answer["data"]["result"]
    assert result, f"panel {title!r}: {expr!r} returned no data"
    values = [float(sample["value"][1]) for sample in result]
    assert not all(math.isnan(v) for v in values), f"panel {title!r}: only NaN from {expr!r}"
    if "rate(" in expr or "increase(" in expr:  # the load happened inside the window
        assert max(v for v in values if not math.isnan(v)) > 0, f"{title!r}: all 0 ({expr!r})"


def test_dashboard_covers_every_exported_metric(stack) -> None:
    """Each rendezvous_* family the server exports appears in some panel."""
    _, api, _ = stack
    names = api.get("/api/v1/label/__name__/values", **{"match[]": "{job='rendezvous'}"})
    exported = {n for n in names["data"] if n.startswith("rendezvous_")}
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    used = " ".join(expr for _, expr in dashboard_queries())
    assert exported, "Prometheus has no rendezvous_* series"
    assert {n for n in exported if n not in used} == set()


def test_instance_variable_lists_the_server(stack) -> None:
    server, api, _ = stack
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    match = re.fullmatch(r"label_values\((\w+), instance\)", variables["instance"]["definition"])
    assert match, variables["instance"]["definition"]
    answer = api.get("/api/v1/label/instance/values", **{"match[]": match.group(1)})
    assert server.instance in answer["data"]


def test_dashboard_has_no_hard_coded_datasource() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board["panels"]):
        for holder in (panel, *panel.get("targets", [])):
            if "datasource" in holder:
                assert holder["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_is_valid_and_its_query_returns_data(stack, rule) -> None:
    server, api, at = stack
    answer = api.query(rule["expr"], at)
    assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"
    match = COMPARISON.match(rule["expr"].strip())
    assert match, f"{rule['alert']}: expr must be '<query> <comparison> <threshold>'"
    result = api.query(match["query"], at)["data"]["result"]
    assert result, f"{rule['alert']}: {match['query']!r} returned no data"
    assert any(s["metric"].get("instance") == server.instance for s in result)


def test_prometheus_loaded_and_evaluates_every_rule(stack) -> None:
    _, api, _ = stack
    groups = api.get("/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == {rule["alert"] for rule in alert_rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        assert rule["state"] == "inactive", f"{name} is {rule['state']} under a light load"


def test_promtool_check_rules() -> None:
    run = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout


def test_promtool_rule_unit_tests() -> None:
    run = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    tested = {
        t["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in test["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}, "every alert has a unit test"


def test_promtool_check_shipped_config(tmp_path: Path) -> None:
    """monitoring/prometheus.yml (compose's) is valid once its rule path exists."""
    text = (MONITORING / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/rendezvous.rules.yml" in text
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/rules/rendezvous.rules.yml", str(RULES))
    )
    run = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr

"""The record follows the task: what `up` wires, and the refresher handler it wires in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from typing import Any

import boto3
import pytest

from rendezvous_deploy.refresher.handler import handler
from rendezvous_deploy.server import commands, follower
from tests.deploy.conftest import Stack
from tests.deploy.events import task_state_change
from tests.deploy.world import answer, clients


def lambda_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    config = boto3.client("lambda", endpoint_url=stack.endpoint, region_name="us-east-1")
    variables = config.get_function_configuration(FunctionName="rendezvous-dns-refresher")[
        "Environment"
    ]["Variables"]
    for key, value in variables.items():
        monkeypatch.setenv(key, value)


def deployed(stack: Stack, quiet: Any) -> tuple[Any, str]:
    with stack.fargate() as fargate, stack.propagation():
        commands.up(stack.aws(), stack.settings(), quiet)
    return fargate, fargate.started[-1][1]


def test_up_wires_rule_target_function_and_permission(stack: Stack, quiet: Any) -> None:
    deployed(stack, quiet)
    kw = {"endpoint_url": stack.endpoint, "region_name": "us-east-1"}
    events = boto3.client("events", **kw)
    lam = boto3.client("lambda", **kw)
    cluster_arn = clients(stack.endpoint)["ecs"].describe_clusters(clusters=["rendezvous"])[
        "clusters"
    ][0]["clusterArn"]

    rule = events.describe_rule(Name="rendezvous-task-running")
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [cluster_arn],
            "group": ["service:rendezvous"],
            "lastStatus": ["RUNNING"],
        },
    }
    function = lam.get_function(FunctionName="rendezvous-dns-refresher")["Configuration"]
    (target,) = events.list_targets_by_rule(Rule="rendezvous-task-running")["Targets"]
    assert target["Arn"] == function["FunctionArn"]
    assert function["Handler"] == "rendezvous_deploy.refresher.handler.handler"
    assert function["Environment"]["Variables"]["RENDEZVOUS_RECORD"] == stack.record + "."
    assert function["Environment"]["Variables"]["RENDEZVOUS_ZONE"] == stack.zone_id
    assert function["CodeSha256"] == follower.code_sha256(follower.function_zip())
    policy = json.loads(lam.get_policy(FunctionName="rendezvous-dns-refresher")["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert rule["Arn"] in json.dumps(statement["Condition"])
    role = boto3.client("iam", **kw).get_role_policy(
        RoleName="rendezvous-dns-refresher", PolicyName="rendezvous-dns-refresher"
    )["PolicyDocument"]
    assert f"hostedzone/{stack.zone_id}" in json.dumps(role)


def test_handler_points_record_at_replacement_task(
    stack: Stack, quiet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fargate, old_ip = deployed(stack, quiet)
    lambda_env(stack, monkeypatch)
    cluster_arn = clients(stack.endpoint)["ecs"].describe_clusters(clusters=["rendezvous"])[
        "clusters"
    ][0]["clusterArn"]
    new_task, new_ip = fargate.replace("Task failed container health checks")
    assert new_ip != old_ip

    other = task_state_change(new_task, cluster_arn, "someone-else", "RUNNING")
    assert "skipped" in handler(other, None, aws=stack.aws())
    pending = task_state_change(new_task, cluster_arn, "rendezvous", "PENDING")
    assert "skipped" in handler(pending, None, aws=stack.aws())

    event = task_state_change(new_task, cluster_arn, "rendezvous", "RUNNING")
    outcome = handler(event, None, aws=stack.aws())
    assert outcome == {"ip": new_ip, "changed": True, "task": new_task}
    stack.propagation().step()  # one sync, no thread: Route 53's name servers catch up
    assert answer(stack.nsd, stack.record + ".") == [new_ip]
    assert handler(event, None, aws=stack.aws())["changed"] is False


def test_function_zip_runs_alone_with_boto3_only(
    stack: Stack, quiet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The shipped zip imports without click, rich or dnspython and refreshes the record."""
    fargate, _ = deployed(stack, quiet)
    new_task, new_ip = fargate.replace("Task stopped by the test")
    code = boto3.client(
        "lambda", endpoint_url=stack.endpoint, region_name="us-east-1"
    ).get_function_configuration(FunctionName="rendezvous-dns-refresher")
    archive = tmp_path / "function.zip"
    archive.write_bytes(follower.function_zip())
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as z:
        assert "rendezvous_deploy/refresher/handler.py" in z.namelist()
    cluster_arn = clients(stack.endpoint)["ecs"].describe_clusters(clusters=["rendezvous"])[
        "clusters"
    ][0]["clusterArn"]
    event = task_state_change(new_task, cluster_arn, "rendezvous", "RUNNING")
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import rendezvous_deploy.refresher.handler as h\n"
        "assert h.__file__.startswith(sys.argv[1]), h.__file__\n"
        "print(json.dumps(h.handler(json.loads(sys.argv[2]))))\n"
        "banned = [m for m in ('click', 'rich', 'dns') if m in sys.modules]\n"
        "assert not banned, banned\n"
    )
    env = {
        **os.environ,
        **code["Environment"]["Variables"],
        "AWS_ENDPOINT_URL": stack.endpoint,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, str(archive), json.dumps(event)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["ip"] == new_ip
    records = clients(stack.endpoint)["route53"].list_resource_record_sets(
        HostedZoneId=stack.zone_id
    )
    values = [
        r["ResourceRecords"][0]["Value"] for r in records["ResourceRecordSets"] if r["Type"] == "A"
    ]
    assert values == [new_ip]


def test_zip_is_deterministic() -> None:
    assert follower.function_zip() == follower.function_zip()


def test_down_delete_removes_service_rule_and_function_but_keeps_record(
    stack: Stack, quiet: Any
) -> None:
    _, ip = deployed(stack, quiet)
    commands.down(stack.aws(), stack.settings(), quiet, delete=True, remove_record=False)
    kw = {"endpoint_url": stack.endpoint, "region_name": "us-east-1"}
    services = clients(stack.endpoint)["ecs"].describe_services(
        cluster="rendezvous", services=["rendezvous"]
    )["services"]
    assert all(s["status"] != "ACTIVE" for s in services)
    assert boto3.client("events", **kw).list_rules(NamePrefix="rendezvous")["Rules"] == []
    names = [f["FunctionName"] for f in boto3.client("lambda", **kw).list_functions()["Functions"]]
    assert "rendezvous-dns-refresher" not in names
    records = clients(stack.endpoint)["route53"].list_resource_record_sets(
        HostedZoneId=stack.zone_id
    )["ResourceRecordSets"]
    assert [r["ResourceRecords"][0]["Value"] for r in records if r["Type"] == "A"] == [ip]
    # Down again finds nothing left to delete, and can still remove the record.
    commands.down(stack.aws(), stack.settings(), quiet, delete=True, remove_record=True)
    records = clients(stack.endpoint)["route53"].list_resource_record_sets(
        HostedZoneId=stack.zone_id
    )["ResourceRecordSets"]
    assert [r for r in records if r["Type"] == "A"] == []

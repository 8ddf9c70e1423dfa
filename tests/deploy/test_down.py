"""`server down`: says what it will delete before it does, removes what `up` made (or says
what it keeps and why), and warns when the record is left on a released address.
Against a moto server process, with the fake Fargate of tests/deploy/world.py."""

from __future__ import annotations

from io import StringIO
from typing import Any

import boto3
from rich.console import Console

from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server import commands
from tests.deploy.conftest import Stack
from tests.deploy.world import clients


def capturing() -> tuple[Reporter, StringIO]:
    out = StringIO()
    return Reporter(Console(file=out, force_terminal=False, width=1000, highlight=False)), out


def test_scaling_down_warns_about_the_record_on_a_released_address(
    stack: Stack, quiet: Any
) -> None:
    with stack.fargate(), stack.propagation():
        up = commands.up(stack.aws(), stack.settings(), quiet)
        reporter, out = capturing()
        commands.down(stack.aws(), stack.settings(), reporter, delete=False, remove_record=False)
    shown = out.getvalue()
    assert f"warning: {stack.record}. still points at {up.ip}" in shown
    assert f"server down --record {stack.record} --remove-record" in shown

    reporter, out = capturing()  # the fix the warning gives
    commands.down(stack.aws(), stack.settings(), reporter, delete=False, remove_record=True)
    assert f"record {stack.record}. removed" in out.getvalue()
    reporter, out = capturing()
    commands.down(stack.aws(), stack.settings(), reporter, delete=False, remove_record=False)
    assert "warning" not in out.getvalue()


def test_delete_removes_what_up_made_and_lists_what_it_keeps(stack: Stack, quiet: Any) -> None:
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(), quiet)
    reporter, out = capturing()
    commands.down(stack.aws(), stack.settings(), reporter, delete=True, remove_record=True)
    shown = out.getvalue()
    plan = shown.index("deleting: service rendezvous;")
    assert plan < shown.index("service rendezvous deleted")
    assert "keeping: log group /ecs/rendezvous: the server's logs" in shown
    assert "ECR repository rendezvous, if `up` pushed to it" in shown

    aws = clients(stack.endpoint)
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1")
    lam = boto3.client("lambda", endpoint_url=stack.endpoint, region_name="us-east-1")
    events = boto3.client("events", endpoint_url=stack.endpoint, region_name="us-east-1")
    logs = boto3.client("logs", endpoint_url=stack.endpoint, region_name="us-east-1")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == []
    assert lam.list_functions()["Functions"] == []
    assert events.list_rules()["Rules"] == []
    groups = aws["ec2"].describe_security_groups()["SecurityGroups"]
    assert "rendezvous-server" not in {g["GroupName"] for g in groups}
    active = aws["ecs"].list_task_definitions(familyPrefix="rendezvous", status="ACTIVE")
    assert active["taskDefinitionArns"] == []
    clusters = aws["ecs"].describe_clusters(clusters=["rendezvous"])["clusters"]
    assert all(c["status"] != "ACTIVE" for c in clusters)
    records = aws["route53"].list_resource_record_sets(HostedZoneId=stack.zone_id)
    assert not [r for r in records["ResourceRecordSets"] if r["Type"] == "A"]
    kept = logs.describe_log_groups(logGroupNamePrefix="/ecs/rendezvous")["logGroups"]
    assert [g["logGroupName"] for g in kept] == ["/ecs/rendezvous"]  # kept, as it said

    reporter, out = capturing()  # a second delete finds nothing and says so
    commands.down(stack.aws(), stack.settings(), reporter, delete=True, remove_record=True)
    assert "service rendezvous absent" in out.getvalue()

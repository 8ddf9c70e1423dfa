"""The main flow through the installed ``rendezvous-deploy`` command, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.deploy.conftest import IMAGE, Stack
from tests.deploy.world import answer, clients

EXE = str(Path(sys.executable).with_name("rendezvous-deploy"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [EXE, "server", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_up_from_empty_account_then_idempotent_then_follow_refresh_status_down(
    stack: Stack,
) -> None:
    aws = clients(stack.endpoint)
    with stack.fargate() as fargate, stack.propagation():
        first = run("up", *stack.cli_args(), "--image-uri", IMAGE)
        assert first.returncode == 0, first.stderr
        ((task_arn, ip),) = fargate.started
        assert first.stdout.strip().splitlines()[-1] == f"{stack.record}:10000"
        assert answer(stack.nsd, stack.record + ".") == [ip]
        assert "registered task definition rendezvous:1" in first.stderr

        second = run("up", *stack.cli_args(), "--image-uri", IMAGE)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip().splitlines()[-1] == f"{stack.record}:10000"
        assert "task definition rendezvous:1 unchanged" in second.stderr
        assert f"already A {ip}" in second.stderr
        revisions = aws["ecs"].list_task_definitions(familyPrefix="rendezvous")
        assert len(revisions["taskDefinitionArns"]) == 1
        assert len(fargate.started) == 1

        # ECS replaces the task (a crash): new task, new public IP, record now stale.
        _, new_ip = fargate.replace("Essential container in task exited")
        assert new_ip and new_ip != ip
        refreshed = run("dns-refresh", *stack.cli_args())
        assert refreshed.returncode == 0, refreshed.stderr
        assert f"A {new_ip} (was different)" in refreshed.stderr
        assert answer(stack.nsd, stack.record + ".") == [new_ip]
        again = run("dns-refresh", *stack.cli_args())
        assert again.returncode == 0, again.stderr
        assert "no change" in again.stderr

        shown = run("status", *stack.cli_args())
        assert shown.returncode == 0, shown.stderr
        table = shown.stdout
        assert new_ip in table and "HEALTHY" in table and "RUNNING" in table
        assert "record matches task" in table and "yes" in table
        assert "Essential container in task exited" in table
        assert task_arn.rsplit("/", 1)[-1] not in table  # the stopped task is not current

        down = run("down", *stack.cli_args(), "--remove-record")
        assert down.returncode == 0, down.stderr
        service = aws["ecs"].describe_services(cluster="rendezvous", services=["rendezvous"])
        assert service["services"][0]["desiredCount"] == 0
        records = aws["route53"].list_resource_record_sets(HostedZoneId=stack.zone_id)
        assert not [r for r in records["ResourceRecordSets"] if r["Type"] == "A"]


def test_help_explains_every_command() -> None:
    shown = subprocess.run([EXE, "server", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for command in ("up", "dns-refresh", "status", "down"):
        assert command in shown.stdout
    up_help = subprocess.run(
        [EXE, "server", "up", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--image-uri" in up_help and "RENDEZVOUS_DEPLOY_IMAGE_URI" in up_help
    assert "--endpoint-url" in up_help and "--config" in up_help

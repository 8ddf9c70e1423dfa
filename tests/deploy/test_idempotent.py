"""A second `up` with nothing changed calls no mutating AWS action at all."""

from __future__ import annotations

from typing import Any

from deploy.server import commands
from tests.deploy.conftest import Stack
from tests.deploy.world import clients

MUTATING = ("Create", "Register", "Update", "Put", "Change", "Authorize", "Add", "Delete")


def test_second_up_changes_nothing(stack: Stack, quiet: Any) -> None:
    with stack.fargate() as fargate, stack.propagation():
        first = commands.up(stack.aws(), stack.settings(), quiet)
        aws = stack.aws()
        second = commands.up(aws, stack.settings(), quiet)
    assert first.registered and first.record_changed
    assert not second.registered and not second.record_changed
    assert second.task_definition_arn == first.task_definition_arn
    assert second.ip == first.ip == fargate.started[0][1]
    mutations = sorted(a for a in aws.actions if a.split(":")[1].startswith(MUTATING))
    assert mutations == []


def test_changed_image_registers_one_revision_and_rolls_the_service(
    stack: Stack, quiet: Any
) -> None:
    with stack.fargate() as fargate, stack.propagation():
        first = commands.up(stack.aws(), stack.settings(), quiet)
        second = commands.up(stack.aws(), stack.settings(image_uri="example/rendezvous:2"),
                             quiet)
    assert second.registered
    assert second.task_definition_arn.endswith(":2")
    ecs = clients(stack.endpoint)["ecs"]
    service = ecs.describe_services(cluster="rendezvous", services=["rendezvous"])["services"][0]
    assert service["taskDefinition"] == second.task_definition_arn
    # The fake Fargate rolled the service: new task, new IP, and the record followed.
    assert len(fargate.started) == 2 and second.ip != first.ip and second.record_changed

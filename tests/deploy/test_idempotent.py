"""A second `up` with nothing changed calls no mutating AWS action at all."""

from __future__ import annotations

from typing import Any

from rendezvous_deploy.server import commands
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
        second = commands.up(stack.aws(), stack.settings(image_uri="example/rendezvous:2"), quiet)
    assert second.registered
    assert second.task_definition_arn.endswith(":2")
    ecs = clients(stack.endpoint)["ecs"]
    service = ecs.describe_services(cluster="rendezvous", services=["rendezvous"])["services"][0]
    assert service["taskDefinition"] == second.task_definition_arn
    # The fake Fargate rolled the service: new task, new IP, and the record followed.
    assert len(fargate.started) == 2 and second.ip != first.ip and second.record_changed


def test_environment_is_reconciled_and_shown_old_to_new(stack: Stack) -> None:
    """A variable no longer given is gone from the new revision; each change is listed."""
    from io import StringIO

    from rich.console import Console

    from rendezvous_deploy.progress import Reporter

    out = StringIO()
    reporter = Reporter(Console(file=out, force_terminal=False, width=1000, highlight=False))
    with stack.fargate(), stack.propagation():
        commands.up(
            stack.aws(),
            stack.settings(environment=(("RENDEZVOUS_LOG_LEVEL", "debug"), ("EXTRA", "1"))),
            reporter,
        )
        out.seek(0)
        out.truncate()
        second = commands.up(
            stack.aws(), stack.settings(environment=(("RENDEZVOUS_LOG_LEVEL", "info"),)), reporter
        )
    ecs = clients(stack.endpoint)["ecs"]
    definition = ecs.describe_task_definition(taskDefinition=second.task_definition_arn)
    env = {
        e["name"]: e["value"]
        for e in definition["taskDefinition"]["containerDefinitions"][0]["environment"]
    }
    assert env.get("RENDEZVOUS_LOG_LEVEL") == "info" and "EXTRA" not in env
    shown = out.getvalue()
    assert "~ task environment EXTRA: 1 -> (none)" in shown
    assert "~ task environment RENDEZVOUS_LOG_LEVEL: debug -> info" in shown
    assert "✓ security group" in shown  # verified, not changed: a different mark

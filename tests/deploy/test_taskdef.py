"""The desired task definition and the comparison that keeps `up` idempotent."""

from __future__ import annotations

import copy
from typing import Any

from rendezvous_deploy.server import taskdef
from rendezvous_deploy.server.settings import ServerSettings

ROLE = "arn:aws:iam::123456789012:role/rendezvous-task-execution"


def as_aws_returns(wanted: dict[str, Any]) -> dict[str, Any]:
    """What describe_task_definition gives back: defaults added, env reordered."""
    latest = copy.deepcopy(wanted)
    latest.update(
        status="ACTIVE",
        revision=3,
        taskDefinitionArn="arn:...:rendezvous:3",
        compatibilities=["EC2", "FARGATE"],
        volumes=[],
        placementConstraints=[],
    )
    container = latest["containerDefinitions"][0]
    container.update(cpu=0, mountPoints=[], volumesFrom=[])
    container["environment"] = list(reversed(container["environment"]))
    return latest


def test_defaults_match_the_brief() -> None:
    wanted = taskdef.desired(ServerSettings(record="r.example.com"), "img", ROLE, "us-east-1")
    assert (wanted["cpu"], wanted["memory"]) == ("1024", "3072")
    (container,) = wanted["containerDefinitions"]
    assert [p["containerPort"] for p in container["portMappings"]] == [10000, 10001, 10002]
    assert "/livez" in " ".join(container["healthCheck"]["command"])
    assert "10001" in " ".join(container["healthCheck"]["command"])
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/ecs/rendezvous"


def test_latest_revision_with_aws_defaults_matches() -> None:
    wanted = taskdef.desired(
        ServerSettings(environment=(("B", "2"), ("A", "1"))), "img", ROLE, "us-east-1"
    )
    assert taskdef.matches(as_aws_returns(wanted), wanted)


def test_any_real_difference_does_not_match() -> None:
    settings = ServerSettings()
    wanted = taskdef.desired(settings, "img:1", ROLE, "us-east-1")
    latest = as_aws_returns(wanted)
    for change in (
        taskdef.desired(settings, "img:2", ROLE, "us-east-1"),
        taskdef.desired(ServerSettings(memory=4096), "img:1", ROLE, "us-east-1"),
        taskdef.desired(ServerSettings(environment=(("X", "1"),)), "img:1", ROLE, "us-east-1"),
    ):
        assert not taskdef.matches(latest, change)
    assert taskdef.changed_fields(
        latest, taskdef.desired(ServerSettings(cpu=2048), "img:1", ROLE, "us-east-1")
    ) == ["cpu"]
    assert not taskdef.matches({**latest, "status": "INACTIVE"}, wanted)
    assert not taskdef.matches(None, wanted)

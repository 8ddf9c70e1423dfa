"""``server up`` keeps the server's auth secret in Secrets Manager and gives only the task
its value: made once (random, never printed), read through the container's ``secrets`` by
the execution role, which may read exactly that secret; ``down --delete`` removes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from rendezvous_deploy.server import authsecret, commands
from tests.deploy.conftest import IMAGE, Stack
from tests.deploy.world import clients

EXE = str(Path(sys.executable).with_name("rendezvous-deploy"))
NAME = "rendezvous/rendezvous/auth-secret"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [EXE, "server", *args], capture_output=True, text=True, timeout=120, env=env
    )


def secrets_client(endpoint: str) -> Any:
    return boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1")


def latest_container(endpoint: str) -> dict[str, Any]:
    ecs = clients(endpoint)["ecs"]
    found = ecs.describe_task_definition(taskDefinition="rendezvous")["taskDefinition"]
    return dict(found["containerDefinitions"][0])


def execution_statements(endpoint: str) -> list[dict[str, Any]]:
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    role = "rendezvous-task-execution"
    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    return list(document["Statement"])


def test_up_makes_the_secret_once_gives_it_to_the_task_and_never_prints_it(
    stack: Stack,
) -> None:
    manager = secrets_client(stack.endpoint)
    with stack.fargate(), stack.propagation():
        first = run("up", *stack.cli_args(), "--image-uri", IMAGE, "--allow-v1", "legacy-.*")
        assert first.returncode == 0, first.stderr
        described = manager.describe_secret(SecretId=NAME)
        arn = described["ARN"]
        value = manager.get_secret_value(SecretId=NAME)["SecretString"]
        assert len(value) >= 43  # token_urlsafe(32): 32 random bytes
        assert {"Key": "rendezvous:managed-by", "Value": "rendezvous-deploy"} in described["Tags"]
        assert f"auth secret {NAME}" in first.stderr
        assert value not in first.stdout + first.stderr

        container = latest_container(stack.endpoint)
        assert container["secrets"] == [{"name": "RENDEZVOUS_AUTH_SECRET", "valueFrom": arn}]
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert environment["RENDEZVOUS_ALLOW_V1"] == "legacy-.*"
        assert "RENDEZVOUS_AUTH_SECRET" not in environment
        assert value not in json.dumps(container)
        readers = [
            s
            for s in execution_statements(stack.endpoint)
            if "secretsmanager:GetSecretValue" in s["Action"]
        ]
        assert [s["Resource"] for s in readers] == [arn]  # exactly this secret

        second = run("up", *stack.cli_args(), "--image-uri", IMAGE, "--allow-v1", "legacy-.*")
        assert second.returncode == 0, second.stderr
        assert "task definition rendezvous:1 unchanged" in second.stderr
        assert manager.describe_secret(SecretId=NAME)["ARN"] == arn
        assert manager.get_secret_value(SecretId=NAME)["SecretString"] == value  # kept
        assert value not in second.stdout + second.stderr

        # --no-auth: a new revision without the secret, and the role loses the right.
        off = run("up", *stack.cli_args(), "--image-uri", IMAGE, "--no-auth")
        assert off.returncode == 0, off.stderr
        assert "registered task definition rendezvous:2" in off.stderr
        assert "--no-auth" in off.stderr
        assert not latest_container(stack.endpoint).get("secrets")
        assert not [
            s
            for s in execution_statements(stack.endpoint)
            if "secretsmanager:GetSecretValue" in s["Action"]
        ]

        down = run("down", *stack.cli_args(), "--delete")
        assert down.returncode == 0, down.stderr
        assert f"removed auth secret {NAME}" in down.stderr
    assert authsecret.find(stack.aws(), "rendezvous") is None


def test_a_rotated_value_is_kept_and_down_delete_tolerates_no_secret(
    stack: Stack, quiet: Any
) -> None:
    """The operator's rotation (put-secret-value "NEW\\nOLD") is never overwritten by
    `up`; `down --delete` of a stack without auth has nothing to remove."""
    manager = secrets_client(stack.endpoint)
    aws = stack.aws()
    arn, created = authsecret.ensure(aws, "rendezvous")
    assert created
    rotated = "N" * 43 + "\n" + manager.get_secret_value(SecretId=NAME)["SecretString"]
    manager.put_secret_value(SecretId=NAME, SecretString=rotated)
    assert authsecret.ensure(aws, "rendezvous") == (arn, False)
    assert manager.get_secret_value(SecretId=NAME)["SecretString"] == rotated
    assert authsecret.delete(aws, "rendezvous")
    assert not authsecret.delete(aws, "rendezvous")
    with stack.fargate(), stack.propagation():
        commands.up(aws, stack.settings(auth=False), quiet)
        commands.down(aws, stack.settings(auth=False), quiet, delete=True, remove_record=True)
    assert authsecret.find(aws, "rendezvous") is None


def test_the_secret_never_goes_into_the_environment_and_allow_v1_needs_auth(
    stack: Stack,
) -> None:
    leaked = run(
        "up", *stack.cli_args(), "--image-uri", IMAGE, "--env", "RENDEZVOUS_AUTH_SECRET=" + "x" * 40
    )
    assert leaked.returncode == 2
    assert "Secrets Manager" in leaked.stderr and "x" * 40 not in leaked.stderr
    pointless = run(
        "up", *stack.cli_args(), "--image-uri", IMAGE, "--no-auth", "--allow-v1", "legacy-.*"
    )
    assert pointless.returncode == 2 and "--allow-v1 only applies with auth" in pointless.stderr
    broken = run("up", *stack.cli_args(), "--image-uri", IMAGE, "--allow-v1", "legacy-(")
    assert broken.returncode == 2 and "not a regular expression" in broken.stderr
    # Nothing was made by the refused commands.
    assert authsecret.find(stack.aws(), "rendezvous") is None

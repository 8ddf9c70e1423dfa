"""User-level mistakes and missing facilities: a region from AWS_REGION, no Docker engine,
the policy-file printer's message. Each fails early, clearly, and creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.cli import main
from rendezvous_deploy.server.image import connect_docker

NO_ENGINE = f"unix:///nonexistent-{os.getpid()}.sock"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _only_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS_REGION set, AWS_DEFAULT_REGION and every config file's region absent."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("RENDEZVOUS_DEPLOY_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_aws_region_alone_is_honoured(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _only_aws_region(monkeypatch, tmp_path)
    assert boto3.Session().region_name is None, "boto3 alone ignores AWS_REGION"
    aws = Aws(endpoint_url=aws_env)
    assert aws.region_name == "eu-west-3"
    sts = aws.client("sts")
    assert sts.meta.region_name == "eu-west-3"
    assert sts.get_caller_identity()["Account"]  # a real call through moto works
    assert Aws(region="ap-south-1", endpoint_url=aws_env).region_name == "ap-south-1"


def test_no_region_anywhere_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _only_aws_region(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with pytest.raises(DeployError, match="no AWS region configured: pass --region"):
        _ = Aws().region_name


def test_connect_docker_without_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    with pytest.raises(DeployError) as refused:
        connect_docker()
    message = str(refused.value)
    assert f"no Docker or podman engine reachable (DOCKER_HOST={NO_ENGINE})" in message
    assert "--image-uri" in message


def _created(url: str) -> dict[str, list[str]]:
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=url, region_name="us-east-1")

    return {
        "roles": [r["RoleName"] for r in client("iam").list_roles()["Roles"]],
        "repositories": [
            r["repositoryName"] for r in client("ecr").describe_repositories()["repositories"]
        ],
        "functions": [f["FunctionName"] for f in client("lambda").list_functions()["Functions"]],
        "layers": [layer["LayerName"] for layer in client("lambda").list_layers()["Layers"]],
        "log groups": [
            g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]
        ],
        "clusters": client("ecs").list_clusters()["clusterArns"],
    }


@pytest.mark.parametrize(
    "args",
    [
        ["server", "up", "--record", "rdv.example.test", "--no-verify-dns"],
        ["pipeline", "up", "--build", "--any-bucket", "--name", f"nodocker{os.getpid()}"],
    ],
    ids=["server-up", "pipeline-up-build"],
)
def test_no_docker_engine_fails_before_creating_anything(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    result = CliRunner().invoke(main, [*args, "--endpoint-url", aws_env])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "DockerException" not in result.output
    assert f"no Docker or podman engine reachable (DOCKER_HOST={NO_ENGINE})" in result.output
    leftovers = {kind: names for kind, names in _created(aws_env).items() if names}
    assert leftovers == {}, "a missing Docker engine must not leave resources behind"


def _roles(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rendezvous_deploy.roles", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "needed"),
    [
        ("deployer", "Region=... Account=... Prefix=... HostedZoneId=... RecordName=..."),
        ("refresher", "Cluster=..."),
        ("task-execution", "Repository=..."),
    ],
)
def test_roles_printer_lists_placeholders(name: str, needed: str) -> None:
    done = _roles(name, "Region=eu-west-1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.endswith("\n")
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{name}.json needs a value for ${{Account}}: pass it as KEY=VALUE" in done.stderr
    assert needed in done.stderr

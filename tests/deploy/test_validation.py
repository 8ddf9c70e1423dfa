"""Every option is checked before the first AWS call that changes anything.

Each bad input runs the real CLI against a moto server process; the message must name the
option and its rule, and the account must be exactly as it was (no log group, role, task
definition, function, security group, cluster).
"""

from __future__ import annotations

from typing import Any

import boto3
import click
import pytest
from click.testing import CliRunner

from rendezvous_deploy import validate
from rendezvous_deploy.cli import main
from tests.deploy.conftest import IMAGE, Stack

PIPELINE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendezvous-pipeline-worker:abc"


def snapshot(url: str) -> dict[str, Any]:
    """What a command could have created in the account, by kind."""

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=url, region_name="us-east-1")

    ec2 = client("ec2")
    return {
        "roles": sorted(r["RoleName"] for r in client("iam").list_roles()["Roles"]),
        "log groups": sorted(
            g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]
        ),
        "task definitions": client("ecs").list_task_definitions()["taskDefinitionArns"],
        "clusters": client("ecs").list_clusters()["clusterArns"],
        "functions": [f["FunctionName"] for f in client("lambda").list_functions()["Functions"]],
        "layers": [x["LayerName"] for x in client("lambda").list_layers()["Layers"]],
        "security groups": sorted(
            g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
        ),
        "state machines": client("stepfunctions").list_state_machines()["stateMachines"],
    }


def refused(args: list[str], *needles: str) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


SERVER_CASES = [
    (["--admin-cidr", "300.1.2.3/99"], ("--admin-cidr", "not an IPv4 CIDR block")),
    (["--admin-cidr", "203.0.113.7/24"], ("--admin-cidr", "write 203.0.113.0/24")),
    (["--cpu", "1024", "--memory", "512"], ("--memory", "does not go with --cpu 1024")),
    (["--cpu", "1000"], ("--cpu", "not a Fargate CPU size")),
    (["--name", "Rendezvous_Prod"], ("--name", "lower-case letters")),
    (["--name", "r" * 50], ("--name", "64-character limit")),
    (["--image-uri", "Not An::Image"], ("--image-uri", "not an image reference")),
    (["--env", "1BAD=x"], ("--env", "KEY=VALUE")),
    (["--subnet", "sub-123"], ("--subnet", "not a subnet id")),
]


@pytest.mark.parametrize(
    ("extra", "needles"), SERVER_CASES, ids=[" ".join(c[0])[:40] for c in SERVER_CASES]
)
def test_server_up_checks_inputs_before_changing_anything(
    stack: Stack, extra: list[str], needles: tuple[str, ...]
) -> None:
    before = snapshot(stack.endpoint)
    args = ["server", "up", *stack.cli_args(), "--image-uri", IMAGE, *extra]
    refused(args, *needles)
    assert snapshot(stack.endpoint) == before


def test_server_record_must_be_a_dns_name(stack: Stack) -> None:
    before = snapshot(stack.endpoint)
    args = [
        "server",
        "up",
        "--endpoint-url",
        stack.endpoint,
        "--image-uri",
        IMAGE,
        "--record",
        "rdv..example.test",
    ]
    refused(args, "--record", "is not a DNS name")
    assert snapshot(stack.endpoint) == before


PIPELINE_CASES = [
    (["--worker-memory", "64", "--any-bucket"], ("--worker-memory", "128-10240")),
    (["--worker-memory", "20000", "--any-bucket"], ("--worker-memory", "128-10240")),
    (["--worker-timeout", "901", "--any-bucket"], ("--worker-timeout", "1-900")),
    (["--worker-timeout", "0", "--any-bucket"], ("--worker-timeout", "1-900")),
    (["--name", "Pipe.Line", "--any-bucket"], ("--name", "lower-case letters")),
    (["--results", "s3://Bad_Bucket/runs"], ("--results", "not an S3 bucket name")),
    ([], ("--results s3://BUCKET/PREFIX", "--any-bucket")),
    (["--any-bucket", "--results", "s3://results"], ("--any-bucket widens",)),
]


@pytest.mark.parametrize(
    ("extra", "needles"), PIPELINE_CASES, ids=[" ".join(c[0]) for c in PIPELINE_CASES]
)
def test_pipeline_up_checks_inputs_before_changing_anything(
    aws_env: str, extra: list[str], needles: tuple[str, ...]
) -> None:
    before = snapshot(aws_env)
    refused(
        ["pipeline", "up", "--image-uri", PIPELINE_IMAGE, "--endpoint-url", aws_env, *extra],
        *needles,
    )
    assert snapshot(aws_env) == before


def test_pipeline_worker_image_must_be_in_ecr(aws_env: str) -> None:
    before = snapshot(aws_env)
    refused(
        ["pipeline", "up", "--image-uri", "python:3.12", "--any-bucket", "--endpoint-url", aws_env],
        "--image-uri",
        "private ECR repository",
    )
    assert snapshot(aws_env) == before


@pytest.mark.parametrize(
    "command", [["server", "status"], ["pipeline", "up", "--build"], ["pipeline", "report"]]
)
def test_endpoint_url_without_scheme_is_named(command: list[str]) -> None:
    refused(
        [*command, "--endpoint-url", "127.0.0.1:5000"],
        "--endpoint-url",
        "not a URL with a scheme",
        "http://127.0.0.1:5000",
    )


def test_down_checks_remove_record_before_deleting(aws_env: str) -> None:
    ecs = boto3.client("ecs", endpoint_url=aws_env, region_name="us-east-1")
    ecs.create_cluster(clusterName="rendezvous")
    ecs.register_task_definition(
        family="rendezvous",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "rendezvous", "image": IMAGE, "memory": 512}],
    )
    ecs.create_service(
        cluster="rendezvous", serviceName="rendezvous", taskDefinition="rendezvous", desiredCount=1
    )
    refused(
        ["server", "down", "--delete", "--remove-record", "--endpoint-url", aws_env],
        "--remove-record needs --record NAME",
        "nothing was changed",
    )
    service = ecs.describe_services(cluster="rendezvous", services=["rendezvous"])["services"]
    assert [s["status"] for s in service] == ["ACTIVE"]
    assert service[0]["desiredCount"] == 1


@pytest.mark.parametrize(
    ("cpu", "memory", "ok"),
    [
        (256, 512, True),
        (256, 4096, False),
        (1024, 3072, True),
        (4096, 30720, True),
        (4096, 31744, False),
        (8192, 20480, True),
        (8192, 17408, False),
        (16384, 122880, True),
    ],
)
def test_fargate_pairs(cpu: int, memory: int, ok: bool) -> None:
    if ok:
        validate.fargate_size(cpu, memory)
    else:
        with pytest.raises(click.BadParameter):
            validate.fargate_size(cpu, memory)


@pytest.mark.parametrize(
    ("image", "ecr"),
    [
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/rdv:1.0",
            ("123456789012", "eu-west-1", "team/rdv"),
        ),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/rdv@sha256:" + "a" * 64,
            ("123456789012", "eu-west-1", "rdv"),
        ),
        ("public.ecr.aws/acme/rdv:latest", None),
        ("ghcr.io/acme/rdv:1", None),
        ("python:3.12", None),
        ("acme/rdv", None),
    ],
)
def test_image_references(image: str, ecr: tuple[str, str, str] | None) -> None:
    assert validate.ecr_image(image) == ecr

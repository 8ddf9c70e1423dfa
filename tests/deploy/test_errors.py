"""Each mistake fails early with a message that names the problem and the fix."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from rendezvous_deploy.aws import Aws, DeployError, MissingPermission
from rendezvous_deploy.server import commands
from rendezvous_deploy.server.dnscheck import parse_server
from rendezvous_deploy.server.record import find_zone
from testbed.procs import free_port
from tests.deploy.conftest import Stack
from tests.deploy.world import clients
from tests.processes import moto_process


def test_hosted_zone_not_found(stack: Stack, quiet: Any) -> None:
    with pytest.raises(DeployError, match=r"hosted zone nowhere\.test not found"):
        commands.up(stack.aws(), stack.settings(zone="nowhere.test"), quiet)
    with pytest.raises(DeployError, match=r"no public hosted zone found for rdv\.nowhere\.test"):
        commands.up(stack.aws(), stack.settings(record="rdv.nowhere.test"), quiet)
    nothing = clients(stack.endpoint)["ecs"].list_clusters()["clusterArns"]
    assert nothing == [], "a failed check must not leave resources behind"


def test_record_outside_zone(stack: Stack, quiet: Any) -> None:
    settings = stack.settings(record="rdv.elsewhere.org", zone=stack.zone)
    with pytest.raises(DeployError, match=r"outside the hosted zone example\d+\.test"):
        commands.up(stack.aws(), settings, quiet)
    by_id = stack.settings(record="rdv.elsewhere.org", zone=stack.zone_id)
    with pytest.raises(DeployError, match="outside the hosted zone"):
        commands.dns_refresh(stack.aws(), by_id, quiet)


def test_subnet_without_public_ip(stack: Stack, quiet: Any) -> None:
    ec2 = clients(stack.endpoint)["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    assert ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["MapPublicIpOnLaunch"] is False
    settings = stack.settings(subnets=(subnet,), assign_public_ip=False)
    with pytest.raises(DeployError, match=f"subnet {subnet} does not give a public IP"):
        commands.up(stack.aws(), settings, quiet)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Essential container in task exited", "stopped: Essential container in task exited"),
        ("Task failed container health checks", "health check .*/livez.* is failing"),
    ],
)
def test_task_stopped_shows_reason(stack: Stack, quiet: Any, reason: str, expected: str) -> None:
    with stack.fargate() as fargate:
        fargate.fail_with = reason
        with pytest.raises(DeployError, match=expected):
            commands.up(stack.aws(), stack.settings(), quiet)
    assert fargate.started, "the fake Fargate should have started (and stopped) a task"


def test_no_task_times_out_with_state(stack: Stack, quiet: Any) -> None:
    settings = stack.settings()
    settings = stack.settings(waits=type(settings.waits)(poll=0.05, task_timeout=1, dns_timeout=1))
    with pytest.raises(DeployError) as failed:
        commands.up(stack.aws(), settings, quiet)
    message = str(failed.value)
    assert re.search(
        r"no running, healthy task after 1 s \(waited [12] s; no task of "
        r"rendezvous:1 started yet\)",
        message,
    ), message
    assert "The service reports no events" in message or "latest events:" in message
    assert "Raise --task-timeout" in message


def test_waiting_shows_elapsed_and_remaining_time(stack: Stack) -> None:
    from io import StringIO

    from rich.console import Console

    from rendezvous_deploy.progress import Reporter

    out = StringIO()
    reporter = Reporter(Console(file=out, force_terminal=False, width=300, highlight=False))
    settings = stack.settings()
    settings = stack.settings(waits=type(settings.waits)(poll=0.05, task_timeout=1, dns_timeout=1))
    with pytest.raises(DeployError):
        commands.up(stack.aws(), settings, reporter)
    shown = out.getvalue()
    assert re.search(r"… no task of rendezvous:1 started yet \(0 s elapsed, 1 s left\)", shown), (
        shown
    )


def test_image_pull_error_says_what_to_check(stack: Stack, quiet: Any) -> None:
    reason = (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): "
        "failed to resolve ref 123456789012.dkr.ecr.us-east-1.amazonaws.com/"
        "rendezvous:test: not found"
    )
    with stack.fargate() as fargate:
        fargate.fail_with = reason
        with pytest.raises(DeployError) as failed:
            commands.up(stack.aws(), stack.settings(), quiet)
    message = str(failed.value)
    assert reason in message
    assert "ECS could not pull the image" in message
    assert "task execution role may pull from its repository" in message


def test_task_without_public_ip_times_out_with_hint(stack: Stack, quiet: Any) -> None:
    settings = stack.settings()
    settings = stack.settings(waits=type(settings.waits)(poll=0.05, task_timeout=1, dns_timeout=1))
    with stack.fargate() as fargate:
        fargate.public_ip = False
        with pytest.raises(DeployError, match="network interface has no public IP"):
            commands.up(stack.aws(), settings, quiet)


def test_dns_verification_succeeds_only_when_servers_answer_new_ip(
    stack: Stack, quiet: Any
) -> None:
    """NSD keeps answering the old address (no propagation): verification times out."""
    stack.nsd.serve({"rdv": "198.18.0.99"})
    settings = stack.settings()
    settings = stack.settings(waits=type(settings.waits)(poll=0.05, task_timeout=20, dns_timeout=1))
    with stack.fargate() as fargate:
        with pytest.raises(DeployError) as failed:
            commands.up(stack.aws(), settings, quiet)
        ip = fargate.started[-1][1]
    message = str(failed.value)
    assert f"should be {ip}" in message and "answers 198.18.0.99" in message
    assert stack.nsd.address in message
    # Now the "name servers" catch up: the same command succeeds without changing anything.
    with stack.fargate(), stack.propagation():
        result = commands.up(stack.aws(), stack.settings(), quiet)
    assert result.ip == ip and not result.record_changed and not result.registered


def test_unreachable_dns_server_is_reported(stack: Stack, quiet: Any) -> None:
    settings = stack.settings(dns_servers=(f"127.0.0.1:{free_port()}",))
    settings = stack.settings(
        dns_servers=settings.dns_servers,
        waits=type(settings.waits)(poll=0.05, task_timeout=20, dns_timeout=0.5),
    )
    with stack.fargate(), pytest.raises(DeployError, match="no answer"):
        commands.up(stack.aws(), settings, quiet)


# --- missing permission: a moto server that enforces IAM, and a user lacking one action


@pytest.fixture
def enforcing_moto() -> Iterator[str]:
    """A separate moto server with IAM enforcement after the first three (setup) calls."""
    with moto_process(env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as url:
        yield url


def test_missing_permission_names_the_action(
    enforcing_moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = boto3.client(
        "iam",
        endpoint_url=enforcing_moto,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    partial_rights = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["ec2:*", "ecs:Describe*"], "Resource": "*"},
        ],
    }
    iam.put_user_policy(
        UserName="deployer", PolicyName="partial", PolicyDocument=json.dumps(partial_rights)
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws = Aws(endpoint_url=enforcing_moto)
    aws.client("route53")  # build the client before asking for a zone
    with pytest.raises(MissingPermission) as denied:
        aws.client("ec2").describe_vpcs()  # allowed: proves the credentials work
        aws.client("route53").get_hosted_zone(Id="ZEXAMPLE123")
    assert denied.value.action == "route53:GetHostedZone"
    assert "missing permission: route53:GetHostedZone" in str(denied.value)
    assert "deploy/iam/deployer.json" in str(denied.value)
    with pytest.raises(MissingPermission, match="missing permission: route53:ListHostedZones"):
        find_zone(aws, "rdv.example.test")  # a paginated call
    with pytest.raises(MissingPermission, match="missing permission: ecs:CreateCluster"):
        aws.client("ecs").describe_clusters(clusters=["x"])  # allowed
        aws.client("ecs").create_cluster(clusterName="x")


def test_dns_server_addresses_are_parsed_or_refused() -> None:
    assert str(parse_server("127.0.0.1:5353")) == "127.0.0.1:5353"
    assert str(parse_server("192.0.2.53")) == "192.0.2.53:53"
    assert str(parse_server("[::1]:5300")) == "::1:5300"
    for bad in ("127.0.0.1:abc", ":53", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="is not HOST"):
            parse_server(bad)

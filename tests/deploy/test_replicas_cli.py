"""`rendezvous-deploy server up --replicas N` as a user runs it: bad inputs are refused
before any AWS change, and a Redis password never reaches the output."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import boto3
import pytest

from rendezvous_deploy.validate import masked_url
from tests.deploy.conftest import IMAGE, Stack
from tests.deploy.test_flow_cli import EXE
from tests.deploy.test_validation import refused
from tests.deploy.test_validation import snapshot as base_snapshot
from tests.deploy.world import clients

PASSWORD = "hunter2-s3cret"


def snapshot(url: str) -> dict[str, Any]:
    """What `up` could have created, replicas mode's parts included."""
    aws = clients(url)
    return {
        **base_snapshot(url),
        "load balancers": aws["elbv2"].describe_load_balancers()["LoadBalancers"],
        "target groups": aws["elbv2"].describe_target_groups()["TargetGroups"],
        "caches": aws["elasticache"].describe_replication_groups()["ReplicationGroups"],
        "cache subnet groups": aws["elasticache"].describe_cache_subnet_groups()[
            "CacheSubnetGroups"
        ],
        "services": boto3.client("ecs", endpoint_url=url, region_name="us-east-1").list_services(
            cluster="rendezvous"
        )["serviceArns"]
        if base_snapshot(url)["clusters"]
        else [],
    }


CASES = [
    (["--replicas", "0"], ("--replicas", "outside 1-20")),
    (["--replicas", "21"], ("--replicas", "outside 1-20", "2-20 run that many")),
    (["--replicas", "three"], ("--replicas", "not a valid integer")),
    (
        ["--replicas", "3", "--redis-url", "http://10.0.0.5:6379"],
        ("--redis-url", "not a Redis URL"),
    ),
    (
        ["--replicas", "3", "--redis-url", f"redis://:{PASSWORD}@10.0.0.5:99999/0"],
        ("--redis-url", "redis://***@10.0.0.5:99999/0"),
    ),
    (
        ["--replicas", "3", "--redis-url", f"redis://:{PASSWORD}@10.0.0.5:6379/db"],
        ("--redis-url", "a database number"),
    ),
    (
        ["--redis-url", f"redis://:{PASSWORD}@10.0.0.5:6379/0"],
        ("--redis-url only applies with --replicas 2 or more",),
    ),
    *[
        (
            ["--replicas", "3", "--redis-url", f"redis://:{secret}@10.0.0.5:6379/0"],
            ("--redis-url", "redis://***@10.0.0.5:6379/0", "percent-encode"),
        )
        # a password holding '/', '?' or '#' ends the URL's authority early: it must be
        # refused with how to write it, and shown masked all the same
        for secret in (f"{PASSWORD}/x", f"ab/{PASSWORD}", f"{PASSWORD}?x", f"a#{PASSWORD}")
    ],
    (
        ["--replicas", "3", "--redis-url", f"redis://u:{PASSWORD}@10.0.0.5:6379:1/0"],
        ("--redis-url", "the port must be a number"),
    ),
    (["--replicas", "2", "--name", "a" * 27], ("--name", "at most 26", "32 characters")),
    (
        ["--replicas", "2", "--env", f"RENDEZVOUS_REDIS_URL=redis://:{PASSWORD}@h/0"],
        ("pass the URL as --redis-url",),
    ),
]


@pytest.mark.parametrize(("extra", "needles"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_replicas_inputs_are_checked_before_any_change(
    stack: Stack, extra: list[str], needles: tuple[str, ...]
) -> None:
    before = snapshot(stack.endpoint)
    shown = refused(["server", "up", *stack.cli_args(), "--image-uri", IMAGE, *extra], *needles)
    assert PASSWORD not in shown
    assert snapshot(stack.endpoint) == before


def test_the_redis_password_never_reaches_the_output(stack: Stack) -> None:
    url = f"redis://:{PASSWORD}@10.0.0.5:6379/0"
    env = {**os.environ, "COLUMNS": "200"}
    args = [EXE, "server", "up", *stack.cli_args(), "--image-uri", IMAGE, "--replicas", "2"]
    with stack.fargate() as fargate, stack.propagation():
        first = subprocess.run(
            [*args, "--redis-url", url], capture_output=True, text=True, timeout=120, env=env
        )
        assert first.returncode == 0, first.stderr
        # The same URL from the environment: the second `up` changes nothing.
        second = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "RENDEZVOUS_DEPLOY_REDIS_URL": url},
        )
        assert second.returncode == 0, second.stderr
    assert len(fargate.started) == 2
    for run in (first, second):
        assert PASSWORD not in run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == f"{stack.record}:10000"
        assert "Redis redis://***@10.0.0.5:6379/0 (given; kept as the secret" in run.stderr
    assert "task definition rendezvous:1 unchanged" in second.stderr
    assert "2 replicas healthy behind rendezvous-nlb" in second.stderr
    assert "already an alias to rendezvous-nlb" in second.stderr
    # what it costs, said where the user looks (the NLB; no cache with --redis-url)
    assert "costs by the hour" in second.stderr and "the NLB $0.0225/h" in second.stderr
    assert "2 tasks $0.059/h each: about $0.14/h" in second.stderr
    assert "ElastiCache node" not in second.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@h:6379/0",
        f"redis://:{PASSWORD}/x@h:6379/0",
        f"redis://u:x?{PASSWORD}@h:6379/0",
        f"redis://:{PASSWORD}#@h:6379/0",
        f"redis://h:6379/0?password={PASSWORD}",
        f"{PASSWORD}@h:6379",
    ],
)
def test_a_masked_url_never_holds_the_password(url: str) -> None:
    assert PASSWORD not in masked_url(url)


def test_a_redis_url_from_the_environment_is_named_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Left exported from an earlier `up --replicas N`, the variable refuses a one-task
    `up`: the error says where the URL came from (and never shows it)."""
    monkeypatch.setenv("RENDEZVOUS_DEPLOY_REDIS_URL", f"redis://:{PASSWORD}@10.0.0.5/0")
    shown = refused(
        ["server", "up", "--record", "rdv.example.com", "--image-uri", IMAGE],
        "--redis-url (from $RENDEZVOUS_DEPLOY_REDIS_URL) only applies with --replicas 2",
    )
    assert PASSWORD not in shown

"""Fixtures for the deploy tests: a moto account with a hosted zone, NSD, a fake Fargate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rendezvous_deploy.aws import Aws
from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server.settings import ServerSettings, Waits
from tests.deploy.world import Fargate, Nsd, Propagation, clients, keep_tasks_running, unique

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/rendezvous:test"


@dataclass
class Stack:
    endpoint: str
    zone_id: str
    zone: str  # example<pid>.test. (with the dot)
    record: str  # rdv.example<pid>.test (no dot)
    nsd: Nsd

    def settings(self, **overrides: object) -> ServerSettings:
        values: dict[str, object] = {
            "record": self.record,
            "image_uri": IMAGE,
            "dns_servers": (self.nsd.address,),
            "waits": Waits(poll=0.05, task_timeout=20, dns_timeout=10),
        }
        values.update(overrides)
        return ServerSettings(**values)  # type: ignore[arg-type]

    def aws(self) -> Aws:
        return Aws(endpoint_url=self.endpoint)

    def fargate(self) -> Fargate:
        return Fargate(self.endpoint)

    def propagation(self) -> Propagation:
        return Propagation(self.endpoint, self.zone_id, self.nsd)

    def cli_args(self) -> list[str]:
        return [
            "--endpoint-url",
            self.endpoint,
            "--record",
            self.record,
            "--dns-server",
            self.nsd.address,
            "--poll-interval",
            "0.05",
            "--task-timeout",
            "20",
            "--dns-timeout",
            "10",
        ]


@pytest.fixture
def stack(aws_env: str, tmp_path: Path) -> Iterator[Stack]:
    """A clean moto account with a public zone, and NSD serving that zone on loopback."""
    keep_tasks_running(aws_env)
    zone = unique("example") + ".test."
    created = clients(aws_env)["route53"].create_hosted_zone(
        Name=zone, CallerReference=unique("zone")
    )
    zone_id = created["HostedZone"]["Id"].rsplit("/", 1)[-1]
    nsd = Nsd(tmp_path, zone)
    try:
        nsd.start()
        yield Stack(aws_env, zone_id, zone, f"rdv.{zone.rstrip('.')}", nsd)
    finally:
        nsd.stop()


@pytest.fixture
def quiet() -> Reporter:
    return Reporter(quiet=True)


@pytest.fixture
def aws_env(aws_env: str) -> str:
    """The reset moto account, with the permissions boundaries an administrator creates
    once (tests/deploy/world.py: create_boundaries)."""
    from tests.deploy.world import create_boundaries

    create_boundaries(aws_env)
    return aws_env

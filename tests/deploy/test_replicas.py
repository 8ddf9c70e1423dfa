"""`server up --replicas N`: N tasks behind a network load balancer, the record an alias
to it, Redis from --redis-url or an ElastiCache `up` makes; idempotent, reconciled when
N changes, removed by `down --delete`. Against a moto server process, with the fake
Fargate of tests/deploy/world.py (which also registers tasks as NLB targets, as ECS does).
"""

from __future__ import annotations

from typing import Any

from rendezvous_deploy.server import balancer, commands
from tests.deploy.conftest import Stack
from tests.deploy.world import clients


def test_smoke(stack: Stack, quiet: Any) -> None:
    with stack.fargate(), stack.propagation():
        result = commands.up(stack.aws(), stack.settings(replicas=3), quiet)
    print(result)

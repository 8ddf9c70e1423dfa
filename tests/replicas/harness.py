"""Replicas for the tests: SharedRoom instances that record their events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from rendezvous.shared_room import RoomEvent, SharedRoom
from tcpunch import Endpoint

FAST = {"heartbeat_interval": 0.2, "heartbeat_ttl": 0.8}


class Replica:
    """A SharedRoom and the events it delivered."""

    def __init__(self, url: str, prefix: str, **options: Any) -> None:
        self.events: list[RoomEvent] = []
        self.room = SharedRoom(url, self.events.append, prefix=prefix, **options)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def replicas(url: str, count: int, **options: Any) -> AsyncIterator[list[Replica]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    group = [Replica(url, prefix, replica_id=f"r{i}", **options) for i in range(count)]
    try:
        for replica in group:
            await replica.room.start(ready_timeout=10)
        yield group
    finally:
        for replica in group:
            await replica.room.stop()


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def ep(i: int, ip: str = "198.51.100.1") -> Endpoint:
    return Endpoint(ip, 20000 + i)

"""Ranks as threads of this process, for tests of the Communicator over one server."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fmi_client import Communicator


def run_ranks(world: int, body: Callable[[int], Any], timeout: float = 90) -> list[Any]:
    """``body(rank)`` for every rank, each in its own thread; their results in rank order."""
    with ThreadPoolExecutor(world) as pool:
        futures = [pool.submit(body, rank) for rank in range(world)]
        return [future.result(timeout=timeout) for future in futures]


def comm_for(server: Any, name: str, rank: int, world: int, **kw: Any) -> Communicator:
    return Communicator(rank, world, f"{server.host}:{server.port}", name, timeout=30, **kw)

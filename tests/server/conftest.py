"""Servers for the tests: real RendezvousServer instances on loopback, free ports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from rendezvous.server import RendezvousServer


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Pairing names that other test runs on this machine never use."""
    counter = iter(range(1_000_000))

    def make(stem: str = "pair") -> str:
        return f"{stem}_{os.getpid()}_{next(counter)}"

    return make


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Any]]:
    """``async with make_server(peer_timeout=0.3) as server`` or ``await make_server()``."""
    stack = contextlib.AsyncExitStack()

    async def make(**settings: Any) -> RendezvousServer:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("http_port", 0)
        server = RendezvousServer(**settings)
        await server.start()
        stack.push_async_callback(server.stop)
        return server

    async with stack:
        yield make


@pytest.fixture
async def server(make_server: Callable[..., Any]) -> RendezvousServer:
    return await make_server()

"""Fixtures for the replica tests: a real redis-server per test module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from testbed.redis_server import RedisServer
from tests.facilities import require


def have_redis_server() -> None:
    require(shutil.which("redis-server") is not None, "redis-server (apt-get install it)")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    have_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""Replicas for the tests: SharedRoom instances that record their events."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from rendezvous.shared_room import RoomEvent, SharedRoom
from tcpunch import Endpoint
from tests.facilities import require
from tests.processes import free_port, stop

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


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _haproxy_config(port: int, backend_ports: tuple[int, ...]) -> str:
    return (
        "global\n"
        "    maxconn 200\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 2s\n"
        "    timeout client 10s\n"
        "    timeout server 10s\n"
        "frontend rendezvous\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend replicas\n"
        "backend replicas\n"
        "    balance roundrobin\n"
        + "".join(
            f"    server r{i} 127.0.0.1:{backend} send-proxy-v2 check inter 200ms "
            "check-send-proxy\n"
            for i, backend in enumerate(backend_ports)
        )
    )


def _start_haproxy(
    exe: str, tmp_path: Path, backend_ports: tuple[int, ...]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start HAProxy on a free port; another free port when that one was taken meanwhile
    (a port is only free until someone else's connection picks it)."""
    for attempt in range(5):
        port = free_port()
        config = tmp_path / f"haproxy-{attempt}.cfg"
        config.write_text(_haproxy_config(port, backend_ports))
        check = subprocess.run([exe, "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = tmp_path / f"haproxy-{attempt}.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [exe, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + 15
        while not _accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                text = log.read_text()
                if "Address already in use" in text and attempt < 4:
                    break
                raise RuntimeError(f"haproxy did not start: {text[-2000:]}")
            time.sleep(0.05)
        else:
            return proc, port
    raise AssertionError("unreachable")


@contextlib.contextmanager
def haproxy(tmp_path: Path, *backend_ports: int) -> Iterator[int]:
    """HAProxy in TCP mode on a free loopback port, sending PROXY v2 to the backends
    (round robin). Health checks every 200 ms use PROXY v2 too (LOCAL command), as an
    NLB's would."""
    exe = shutil.which("haproxy")
    require(exe is not None, "haproxy (apt-get install haproxy)")
    assert exe is not None
    proc, port = _start_haproxy(exe, tmp_path, backend_ports)
    try:
        yield port
    finally:
        stop(proc)

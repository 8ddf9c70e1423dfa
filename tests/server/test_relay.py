"""The relay and NAT discovery on loopback: real server, real sockets, the real client."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fmi_client.relay import RelayRefused, discover_nat, relay_connect
from rendezvous.server import RendezvousServer
from tcpunch.relay import RelayRefusal

HOST = "127.0.0.1"


def connect_both(name: str, port: int, timeout: float = 5) -> tuple[socket.socket, socket.socket]:
    """Both ends of ``name`` through the relay (one in a thread: the first one waits)."""
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {}

    def first() -> None:
        try:
            result["a"] = relay_connect(name, HOST, port, deadline)
        except Exception as exc:  # handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.05)
    try:
        b = relay_connect(name, HOST, port, deadline)
    finally:
        thread.join()
    if "error" in result:
        b.close()
        raise result["error"]
    return result["a"], b


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def recv_all(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def test_relay_carries_bytes_both_ways_and_counts_them(make_server, unique) -> None:
    server: RendezvousServer = await make_server()
    name = unique("relay")

    def work() -> tuple[bytes, bytes, bytes]:
        a, b = connect_both(name, server.port)
        with a, b:
            a.sendall(b"ping" * 1000)
            got_b = recv_all(b, 4000)
            b.sendall(b"pong")
            got_a = recv_all(a, 4)
            a.shutdown(socket.SHUT_WR)  # half-close: b still talks to a
            eof_b = b.recv(1)
            b.sendall(b"after")
            late = recv_all(a, 5)
            return got_b + got_a, eof_b, late

    data, eof_b, late = await in_thread(work)
    assert data == b"ping" * 1000 + b"pong"
    assert eof_b == b"" and late == b"after"
    await asyncio.sleep(0.1)
    metrics = server.relay.metrics
    assert metrics.started == 1 and metrics.bytes == 4009
    assert metrics.ends["closed"] == 1 and not server.relay.sessions
    assert sum(metrics.duration_counts) == 1
    text = (await in_thread(lambda: _scrape(server))).decode()
    assert "rendezvous_relay_bytes_total 4009.0" in text
    assert 'rendezvous_relay_refused_total{reason="server_full"} 0.0' in text
    assert "rendezvous_relay_session_seconds_count 1.0" in text


def _scrape(server: RendezvousServer) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{server.http_port}/metrics", timeout=5) as r:
        return bytes(r.read())


async def test_no_relay_gives_the_named_error(make_server, unique) -> None:
    server = await make_server(relay=False)
    with pytest.raises(RelayRefused, match="--no-relay") as info:
        await in_thread(lambda: relay_connect(unique(), HOST, server.port, time.monotonic() + 5))
    assert info.value.reason is RelayRefusal.DISABLED
    assert server.relay.metrics.refused["disabled"] == 1


async def test_peer_that_never_asks_times_out_with_a_reason(make_server, unique) -> None:
    server = await make_server(peer_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RelayRefused) as info:
        await in_thread(lambda: relay_connect(unique(), HOST, server.port, time.monotonic() + 5))
    assert info.value.reason is RelayRefusal.PEER_TIMEOUT
    assert time.monotonic() - started < 3
    assert server.relay.metrics.refused["peer_timeout"] == 1
    assert not server.relay.waiting and not server.relay.per_ip


async def test_byte_limit_resets_both_ends(make_server, unique) -> None:
    server = await make_server(relay_max_bytes=100_000)

    def work() -> tuple[int, bool]:
        a, b = connect_both(unique(), server.port)
        with a, b:
            a.sendall(b"x" * 50_000)
            got = len(recv_all(b, 50_000))
            reset = False
            try:
                a.sendall(b"y" * 200_000)
                while b.recv(65536):
                    pass
            except ConnectionResetError:
                reset = True
            return got, reset

    got, reset = await in_thread(work)
    assert got == 50_000 and reset
    await asyncio.sleep(0.1)
    assert server.relay.metrics.ends["bytes_limit"] == 1
    assert server.relay.metrics.bytes <= 100_000 + 256 * 1024  # at most one read beyond


async def test_idle_session_ends(make_server, unique) -> None:
    server = await make_server(relay_idle_timeout=0.3)

    def work() -> bytes:
        a, b = connect_both(unique(), server.port)
        with a, b:
            a.settimeout(5)
            try:
                return a.recv(1)
            except ConnectionResetError:
                return b"reset"

    assert await in_thread(work) == b"reset"
    assert server.relay.metrics.ends["idle"] == 1


async def test_per_ip_global_and_busy_caps(make_server, unique) -> None:
    server = await make_server(relay_max_per_ip=2, relay_max_sessions=1)
    name = unique()

    def work() -> list[RelayRefusal]:
        a, b = connect_both(name, server.port)
        reasons = []
        with a, b:
            for target in (unique(), name):  # a new session; the busy one
                try:
                    relay_connect(target, HOST, server.port, time.monotonic() + 2).close()
                except RelayRefused as exc:
                    reasons.append(exc.reason)
        return reasons

    assert await in_thread(work) == [RelayRefusal.SERVER_FULL, RelayRefusal.BUSY]
    server2 = await make_server(relay_max_per_ip=1)

    def per_ip() -> RelayRefusal:
        deadline = time.monotonic() + 3
        holder: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: holder.setdefault("r", _try(unique("w"), server2.port, deadline))
        )
        thread.start()
        time.sleep(0.1)
        try:
            relay_connect(unique("x"), HOST, server2.port, deadline).close()
        except RelayRefused as exc:
            return exc.reason
        finally:
            server2.relay.close_all("stop")
            thread.join()
        raise AssertionError("second end from one IP was let in")

    assert await in_thread(per_ip) is RelayRefusal.PER_IP_CAP
    for srv, reason in ((server, "server_full"), (server, "busy"), (server2, "per_ip_cap")):
        assert srv.relay.metrics.refused[reason] >= 1


def _try(name: str, port: int, deadline: float) -> object:
    try:
        return relay_connect(name, HOST, port, deadline)
    except Exception as exc:
        return exc


async def test_drain_ends_relay_sessions_within_the_timeout(make_server, unique) -> None:
    server = await make_server()
    pair = await in_thread(lambda: connect_both(unique(), server.port))
    a, b = pair
    with a, b:
        started = time.monotonic()
        await server.drain(timeout=0.5)
        elapsed = time.monotonic() - started
        b.settimeout(5)
        with pytest.raises(ConnectionResetError):
            await in_thread(lambda: b.recv(1))
    assert 0.4 < elapsed < 3
    assert server.relay.metrics.ends["drain"] == 1 and not server.relay.sessions


async def test_discovery_on_loopback_is_endpoint_independent(make_server) -> None:
    server = await make_server(discovery_port=0)
    found = await in_thread(
        lambda: discover_nat(HOST, server.port, server.discovery_port, 0, time.monotonic() + 5)
    )
    assert found.mapping == "endpoint-independent" and found.punchable
    assert found.via_rendezvous == found.via_discovery == (HOST, found.local_port)
    assert server.relay.metrics.discovery == 2  # the OBSERVE request and the port


async def test_discovery_port_off_is_a_clean_error(make_server) -> None:
    from fmi_client.errors import RendezvousUnreachable

    server = await make_server()
    assert server.discovery_port is None
    with socket.socket() as spare:
        spare.bind((HOST, 0))
        closed = spare.getsockname()[1]
    with pytest.raises(RendezvousUnreachable, match="--discovery-port"):
        await in_thread(lambda: discover_nat(HOST, server.port, closed, 0, time.monotonic() + 2))

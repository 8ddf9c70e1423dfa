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
from tcpunch.credential import mint
from tcpunch.relay import RelayRefusal, RelayRequest, derive_session, encode_relay_request

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


async def test_credential_check_refuses_with_a_reason(make_server, unique) -> None:
    """Issue 11's hook: with a check in place, a credential it rejects is refused."""
    server = await make_server()
    server.relay.credential_check = lambda request: request.credential == b"good"
    name = unique()
    with pytest.raises(RelayRefused, match="credential") as info:
        await in_thread(
            lambda: relay_connect(name, HOST, server.port, time.monotonic() + 5, b"bad")
        )
    assert info.value.reason is RelayRefusal.BAD_CREDENTIAL
    assert server.relay.metrics.refused["bad_credential"] == 1


async def test_bytes_before_accepted_drop_the_waiting_end(make_server, unique) -> None:
    server = await make_server()
    wire = encode_relay_request(RelayRequest(unique().encode(), b"\x07" * 16))

    def work() -> bytes:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(wire)
            assert sock.recv(2) == b"\x01\x00"  # waiting for the peer
            sock.sendall(b"too early")
            try:
                return sock.recv(10)
            except ConnectionResetError:
                return b""

    assert await in_thread(work) == b""
    await asyncio.sleep(0.05)
    assert server.relay.metrics.refused["early_data"] == 1 and not server.relay.waiting


async def test_duration_limit_and_the_rendezvous_side_lets_go(make_server, unique) -> None:
    server = await make_server(relay_max_duration=0.3)

    def work() -> tuple[bytes, int]:
        a, b = connect_both(unique(), server.port)
        open_now = len(server.connections)  # relay ends are not rendezvous connections
        with a, b:
            a.sendall(b"keep")
            b.settimeout(5)
            assert b.recv(4) == b"keep"
            try:
                return b.recv(1), open_now
            except ConnectionResetError:
                return b"reset", open_now

    end, open_now = await in_thread(work)
    assert end == b"reset" and open_now == 0
    assert server.relay.metrics.ends["duration_limit"] == 1


async def test_malformed_extension_request_is_refused_like_any_bad_request(
    make_server,
) -> None:
    server = await make_server()

    def work() -> bytes:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(b"\x00TPX\x01\x07")  # an unknown kind
            return recv_all(sock, 100)

    answer = await in_thread(work)
    assert len(answer) == 51 and answer[0] == 3  # v2's ERROR, as for any bad NUL request
    assert server.metrics.rejected["malformed"] == 1


def test_a_server_without_relay_support_gives_a_named_error() -> None:
    """What a server of before the relay answers (v2's ERROR once its request timeout
    cuts the short "v2" request off) becomes RelayRefused(MALFORMED), not a hang."""
    with socket.create_server((HOST, 0)) as old:

        def answer() -> None:
            conn, _ = old.accept()
            with conn:
                conn.recv(1000)
                conn.sendall(b"\x03" + bytes([127, 0, 0, 1]) + bytes(46))

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            with pytest.raises(RelayRefused, match="does not support") as info:
                relay_connect("n", HOST, old.getsockname()[1], time.monotonic() + 5)
        finally:
            thread.join()
    assert info.value.reason is RelayRefusal.MALFORMED


async def test_relay_names_obey_the_name_pattern(make_server, unique) -> None:
    server = await make_server(name_pattern="ok-.*")

    def work() -> tuple[object, bytes]:
        refused = _try("evil-name", server.port, time.monotonic() + 3)
        a, b = connect_both(f"ok-{unique()}", server.port)
        with a, b:
            a.sendall(b"allowed")
            return refused, recv_all(b, 7)

    refused, carried = await in_thread(work)
    assert isinstance(refused, RelayRefused) and refused.reason is RelayRefusal.NAME_PATTERN
    assert "--name-pattern" in str(refused)
    assert carried == b"allowed"
    assert server.relay.metrics.refused["name_pattern"] == 1
    scraped = await in_thread(lambda: _scrape(server))
    assert b'rendezvous_relay_refused_total{reason="name_pattern"} 1.0' in scraped


async def test_default_per_ip_cap_lets_a_nat_gateways_ranks_in(make_server, unique) -> None:
    """Ranks behind one NAT share a source address: 300 relay ends from 127.0.0.1 (150
    links) all wait under the default caps."""
    server = await make_server()
    writers: list[asyncio.StreamWriter] = []
    try:
        replies = []
        for _ in range(300):
            name = unique("nat").encode()
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writers.append(writer)
            writer.write(encode_relay_request(RelayRequest(name, derive_session(name))))
            replies.append(await asyncio.wait_for(reader.readexactly(2), 5))
        assert set(replies) == {b"\x01\x00"}  # all waiting for their peer
        assert server.relay.metrics.refused["per_ip_cap"] == 0
    finally:
        for writer in writers:
            writer.close()


async def test_relay_credential_as_str_or_from_the_environment(
    make_server, unique, monkeypatch
) -> None:
    """relay_connect takes the credential as `rendezvous credential` prints it (a str),
    or from $RENDEZVOUS_CREDENTIAL as pair() does; bytes still work."""
    secret = b"relay-secret-0123456789-abcdef"
    server = await make_server(auth_secrets=(secret,))
    minted = mint(secret, "job7/", 600, time.time())

    def carry(name: str, credential: object) -> bytes:
        deadline = time.monotonic() + 5
        holder: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: holder.setdefault(
                "a", relay_connect(name, HOST, server.port, deadline, credential)
            )
        )
        thread.start()
        time.sleep(0.05)
        try:
            b = relay_connect(name, HOST, server.port, deadline, credential)
        finally:
            thread.join()
        with holder["a"], b:
            holder["a"].sendall(b"cred")
            return recv_all(b, 4)

    assert await in_thread(lambda: carry(unique("job7/"), minted)) == b"cred"
    assert await in_thread(lambda: carry(unique("job7/"), minted.encode())) == b"cred"
    monkeypatch.setenv("RENDEZVOUS_CREDENTIAL", minted)
    assert await in_thread(lambda: carry(unique("job7/"), None)) == b"cred"
    with pytest.raises(ValueError, match="RENDEZVOUS_CREDENTIAL is for names starting with"):
        relay_connect(unique("other/"), HOST, server.port, time.monotonic() + 1)
    monkeypatch.delenv("RENDEZVOUS_CREDENTIAL")
    refused = await in_thread(lambda: _try(unique("job7/"), server.port, time.monotonic() + 2))
    assert isinstance(refused, RelayRefused) and refused.reason is RelayRefusal.BAD_CREDENTIAL


async def test_hung_up_waiters_are_ended_abandoned_not_refused(make_server, unique) -> None:
    server = await make_server()
    name = unique().encode()

    def hang_up() -> bytes:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(encode_relay_request(RelayRequest(name, derive_session(name))))
            return recv_all(sock, 2)

    assert await in_thread(hang_up) == b"\x01\x00"
    for _ in range(200):
        if server.relay.metrics.ends.get("abandoned"):
            break
        await asyncio.sleep(0.01)
    scraped = await in_thread(lambda: _scrape(server))
    assert b'rendezvous_relay_ended_total{reason="abandoned"} 1.0' in scraped
    assert b'rendezvous_relay_refused_total{reason="abandoned"}' not in scraped
    # one drain label: "draining" for refusals, "drain" only for sessions the drain ended
    assert b'rendezvous_relay_refused_total{reason="draining"} 0.0' in scraped
    assert b'rendezvous_relay_refused_total{reason="drain"}' not in scraped
    assert b"rendezvous_relay_session_seconds_count 0.0" in scraped

"""Bad input, silent clients and limits: refused with a reason, nobody else delayed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tcpunch import V2_REQUEST_SIZE, Status, encode_v2_request, pack_endpoint
from tests.server.wire import connect, v1, v2, wait_for


def rejected(server, reason: str) -> float:
    return server.metrics.rejected.get(reason, 0)


def v2_bytes(name: bytes, token: bytes = b"", flags: bytes = b"\0\0\0\0") -> bytes:
    return name.ljust(100, b"\0") + token.ljust(37, b"\0") + flags


@pytest.mark.parametrize(
    ("payload", "reason", "v2_error"),
    [
        (b"x" * 101, "oversized", False),
        (b"fmi\r\npair", "junk", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "junk", False),
        (v2_bytes(b"\xff\xfe bad"), "not_utf8", True),
        (v2_bytes(b""), "malformed", True),
        (v2_bytes(b"name", b"not-a-uuid"), "malformed", True),
        (v2_bytes(b"name") + b"extra", "oversized", True),
        (b"a" * 99 + b"\0" + b"b" * 41, "malformed", True),  # token not NUL-terminated
    ],
    ids=[
        "v1-oversized",
        "v1-control-bytes",
        "http-request",
        "v2-non-utf8",
        "v2-empty-name",
        "v2-bad-token",
        "v2-too-long",
        "v2-unterminated-token",
    ],
)
async def test_bad_requests_are_refused(server, payload, reason, v2_error, caplog):
    caplog.set_level(logging.WARNING, logger="rendezvous")
    client = await connect(server.port, payload)
    rest = await client.read_rest()
    if v2_error:
        assert len(rest) == 51 and rest[0] == Status.ERROR
    else:
        assert rest == b""
    assert rejected(server, reason) == 1
    assert any(getattr(r, "reason", None) == reason for r in caplog.records)
    assert len(server.room) == 0
    await client.close()


async def test_empty_connection_is_counted(server):
    client = await connect(server.port)
    await client.close()
    await wait_for(lambda: rejected(server, "empty") == 1)


async def test_incomplete_v2_then_eof(server):
    client = await connect(server.port, encode_v2_request("half")[:60])
    client.writer.write_eof()
    assert await client.read_rest() == b""
    await wait_for(lambda: rejected(server, "incomplete") == 1)
    await client.close()


async def test_v2_request_in_pieces_is_assembled(server, unique):
    name = unique()
    raw = encode_v2_request(name)
    # The first read decides the protocol, so it must hold the name's NUL (as one send()
    # of the whole request always does).
    first = len(name) + 3
    client = await connect(server.port, raw[:first])
    await asyncio.sleep(0.05)
    client.send(raw[first:120])
    await asyncio.sleep(0.05)
    client.send(raw[120:])
    assert (await client.read_v2()).status is Status.WAITING
    await client.close()


async def test_silent_client_is_dropped_at_request_deadline(make_server):
    server = await make_server(request_timeout=0.3)
    client = await connect(server.port)
    assert await client.read_rest(timeout=3) == b""
    assert rejected(server, "request_timeout") == 1
    await client.close()


async def test_slow_partial_v2_gets_error_at_deadline(make_server):
    server = await make_server(request_timeout=0.3)
    client = await connect(server.port, encode_v2_request("slow")[: V2_REQUEST_SIZE - 1])
    rest = await client.read_rest(timeout=3)
    assert len(rest) == 51 and rest[0] == Status.ERROR
    await client.close()


async def test_silent_clients_do_not_delay_pairings(server, unique):
    silent = [await connect(server.port) for _ in range(20)]
    half = [await connect(server.port, encode_v2_request("x")[:50]) for _ in range(5)]
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    b = await v1(server.port, name)
    # Both get their peer while 25 connections sit there without a complete request.
    assert await b.read_rest(timeout=2) == pack_endpoint(*a.local)
    assert await a.read_rest(timeout=2) == pack_endpoint(*b.local)
    for client in [*silent, *half, a, b]:
        await client.close()


async def test_connection_cap_refuses_and_readyz_reports_full(make_server, unique):
    server = await make_server(max_connections=3)
    held = [await connect(server.port) for _ in range(3)]
    await wait_for(lambda: len(server.connections) == 3)
    assert not server.ready
    extra = await connect(server.port, unique().encode())
    assert await extra.read_rest() == b""
    assert rejected(server, "connection_cap") == 1
    for client in held:
        await client.close()
    await wait_for(lambda: server.ready)
    ok = await v1(server.port, unique())
    await ok.close()
    await extra.close()


async def test_per_ip_waiting_cap(make_server, unique):
    server = await make_server(max_waiting_per_ip=2)
    waiting = [await v2(server.port, unique()) for _ in range(2)]
    for client in waiting:
        assert (await client.read_v2()).status is Status.WAITING
    third = await v2(server.port, unique())
    assert (await third.read_v2()).status is Status.ERROR
    fourth = await connect(server.port, unique().encode())  # v1: closed, no endpoint
    assert await fourth.read_rest() == b""
    assert rejected(server, "per_ip_waiting_cap") == 2
    # Pairing with an existing waiter is not capped.
    name = server.room._waiting.copy().popitem()[0].decode()
    pairer = await v2(server.port, name)
    assert (await pairer.read_v2()).status is Status.PAIRED
    for client in [*waiting, third, fourth, pairer]:
        await client.close()


async def test_extra_bytes_from_a_waiter_are_ignored(server, unique):
    name = unique()
    a = await v2(server.port, name)
    await a.read_v2()
    a.send(b"chatter" * 100)
    await asyncio.sleep(0.05)
    b = await v2(server.port, name)
    assert (await b.read_v2()).peer == a.local
    await a.close()
    await b.close()


async def test_partial_request_cut_off_by_drain_is_logged_as_drain(make_server):

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("rendezvous")
    keep = Keep(logging.WARNING)
    log.addHandler(keep)
    try:
        server = await make_server(request_timeout=30)
        client = await connect(server.port, encode_v2_request("drained")[:10])
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.drain(timeout=0.2), 10)
        assert await client.read_rest(timeout=3) is not None
        await client.close()
    finally:
        log.removeHandler(keep)
    assert rejected(server, "drain") == 1 and rejected(server, "request_timeout") == 0
    refused = [r for r in records if getattr(r, "event", None) == "refused"]
    assert [r.reason for r in refused] == ["drain"]
    assert "drain ended after 0.2 s" in refused[0].detail
    assert "no complete request" not in refused[0].detail

"""``serve --proxy-protocol`` (no Redis needed): the PROXY v2 header names the client, the
bytes after it are the request's first read, a LOCAL header (a balancer's health check)
closes quietly, and anything else is refused with a counted reason."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from fmi_client.relay import discover_nat
from rendezvous.proxy_protocol import build_header
from tcpunch import (
    V2_RESPONSE_SIZE,
    Endpoint,
    Status,
    decode_v2_response,
    encode_v2_request,
    pack_endpoint,
)

BALANCER = ("127.0.0.1", 10000)


async def _open(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (bounded in time)."""
    return await asyncio.wait_for(reader.read(), 5)


async def test_the_header_names_both_clients_of_a_pair(make_server, unique):
    server = await make_server(proxy_protocol=True)
    name = unique("proxied")
    a_reader, a_writer = await _open(server)
    # header and request in one write: the request is what followed the header
    a_writer.write(build_header(("203.0.113.7", 40001), BALANCER) + encode_v2_request(name))
    waiting = decode_v2_response(await a_reader.readexactly(V2_RESPONSE_SIZE))
    assert waiting.status is Status.WAITING
    assert waiting.you == Endpoint("203.0.113.7", 40001)
    b_reader, b_writer = await _open(server)
    b_writer.write(build_header(("198.51.100.9", 40002), BALANCER))  # header alone first
    await b_writer.drain()
    await asyncio.sleep(0.05)
    b_writer.write(name.encode())  # then a v1 name in one read
    assert await _closed(b_reader) == pack_endpoint("198.51.100.9", 40002) + pack_endpoint(
        "203.0.113.7", 40001
    )
    paired = decode_v2_response(await a_reader.readexactly(V2_RESPONSE_SIZE))
    assert paired.status is Status.PAIRED
    assert paired.you == Endpoint("203.0.113.7", 40001)
    assert paired.peer == Endpoint("198.51.100.9", 40002)
    for writer in (a_writer, b_writer):
        writer.close()
    assert server.metrics.pairings["mixed"] == 1


async def test_a_local_header_closes_quietly(make_server):
    server = await make_server(proxy_protocol=True)
    before = dict(server.metrics.rejected)
    reader, writer = await _open(server)
    writer.write(build_header(None, None, command="local"))
    assert await _closed(reader) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert server.metrics.rejected == before  # a health check is not a refusal
    assert server.pairings == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (encode_v2_request("direct"), "proxy_bad_signature"),  # bypassed the balancer
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy_bad_signature"),  # v1 text header
        (build_header(("2001:db8::1", 443), ("2001:db8::2", 10000)), "not_ipv4"),
    ],
)
async def test_no_valid_header_is_refused_and_counted(make_server, payload, reason):
    server = await make_server(proxy_protocol=True)
    reader, writer = await _open(server)
    writer.write(payload)
    assert await _closed(reader) == b""
    writer.close()
    assert server.metrics.rejected[reason] == 1


async def test_eof_inside_the_header_and_a_header_too_slow_are_counted(make_server):
    server = await make_server(proxy_protocol=True, request_timeout=0.3)
    _, writer = await _open(server)
    writer.write(build_header(("203.0.113.7", 1), BALANCER)[:10])
    await writer.drain()
    writer.close()
    slow_reader, slow_writer = await _open(server)
    slow_writer.write(build_header(("203.0.113.7", 2), BALANCER)[:20])
    assert await _closed(slow_reader) == b""  # the request deadline covers the header
    slow_writer.close()
    await asyncio.sleep(0.1)
    assert server.metrics.rejected["proxy_closed_in_header"] == 1
    assert server.metrics.rejected["request_timeout"] == 1
    assert not server.connections


async def _balancer(target_port: int) -> asyncio.Server:
    """A balancer in front of ``target_port`` (HAProxy ``send-proxy-v2``): every
    connection opens its own to the target, starts it with a header naming the client,
    then copies bytes both ways."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[:2]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        up_writer.write(build_header(client, ("127.0.0.1", target_port)))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_nat_discovery_behind_the_balancer_sees_the_client(make_server):
    """Both ports answer the endpoint the header names: had the discovery port answered
    the balancer's own endpoint, every client would read "port-dependent" and relay."""
    server = await make_server(proxy_protocol=True, discovery_port=0)
    front, front_discovery = await _balancer(server.port), await _balancer(server.discovery_port)
    async with front, front_discovery:
        ports = [s.sockets[0].getsockname()[1] for s in (front, front_discovery)]
        found = await asyncio.get_running_loop().run_in_executor(
            None, lambda: discover_nat("127.0.0.1", *ports, 0, time.monotonic() + 5)
        )
    assert found.mapping == "endpoint-independent"
    assert found.via_discovery == found.via_rendezvous == Endpoint("127.0.0.1", found.local_port)


async def test_the_discovery_port_refuses_bad_headers_like_the_rendezvous_port(make_server):
    server = await make_server(proxy_protocol=True, discovery_port=0, request_timeout=0.3)

    async def ask(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.discovery_port)
        writer.write(payload)
        try:
            return await _closed(reader)
        except ConnectionError:  # refused with a reset
            return b""
        finally:
            writer.close()

    assert await ask(build_header(("203.0.113.7", 4242), BALANCER)) == pack_endpoint(
        "203.0.113.7", 4242
    )
    assert await ask(build_header(None, None, command="local")) == b""  # a health check
    assert await ask(b"GET / HTTP/1.0\r\n\r\n") == b""
    assert await ask(build_header(("203.0.113.7", 1), BALANCER)[:20]) == b""  # too slow
    assert await ask(build_header(("2001:db8::1", 443), ("2001:db8::2", 10000))) == b""
    await asyncio.sleep(0.05)
    rejected = server.metrics.rejected
    assert rejected["proxy_bad_signature"] == 1
    assert rejected["request_timeout"] == 1
    assert rejected["not_ipv4"] == 1
    assert server.relay.metrics.discovery == 1
    assert server.proxied_discovery is not None and not server.proxied_discovery.open


async def test_discovery_connections_waiting_for_a_header_count_against_the_cap(make_server):
    server = await make_server(proxy_protocol=True, discovery_port=0, max_connections=3)
    held = [await asyncio.open_connection("127.0.0.1", server.discovery_port) for _ in range(3)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.discovery_port)
    writer.write(build_header(("203.0.113.7", 4242), BALANCER))
    with contextlib.suppress(ConnectionError):
        assert await _closed(reader) == b""
    writer.close()
    assert server.metrics.rejected["connection_cap"] == 1
    assert server.proxied_discovery is not None and len(server.proxied_discovery.open) == 3
    for _, held_writer in held:
        held_writer.close()

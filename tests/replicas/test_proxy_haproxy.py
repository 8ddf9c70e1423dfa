"""PROXY v2 behind a real HAProxy (Debian's package): the parser sees the client's own
address and port, HAProxy's LOCAL health checks parse, and a client that bypasses the
balancer is refused at its first byte."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from rendezvous.proxy_protocol import Parsed, ProxyHeader, ProxyHeaderReader, ProxyProtocolError
from tcpunch import (
    NeedMoreData,
    RequestReader,
    V1Request,
    V2Request,
    encode_v2_request,
    pack_endpoint,
    unpack_endpoint,
)
from tests.replicas.harness import haproxy


class EchoEndpointServer:
    """A tiny rendezvous-like backend: reads the PROXY header with our parser, then one
    TCPunch request, and answers the v1 8-byte endpoint of the client the header named."""

    def __init__(self) -> None:
        self.headers: list[ProxyHeader] = []
        self.requests: list[object] = []
        self.errors: list[ProxyProtocolError] = []
        self.hangups: list[ProxyHeader] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                await self._serve(reader, writer)
        except ProxyProtocolError as exc:
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy = ProxyHeaderReader()
        result: object = NeedMoreData
        while result is NeedMoreData:
            data = await reader.read(4096)
            if not data:
                proxy.eof()
            result = proxy.feed(data)
        assert isinstance(result, Parsed)
        self.headers.append(result.header)
        if result.header.command == "local":
            return  # a health check: nothing follows
        requests = RequestReader()
        data = result.rest or await reader.read(4096)  # a v1 name is what one read gives
        request = requests.feed(data) if data else NeedMoreData
        while request is NeedMoreData and data:
            data = await reader.read(4096)
            request = requests.feed(data)
        if request is NeedMoreData:
            self.hangups.append(result.header)  # connected and left without a request
            return
        self.requests.append(request)
        endpoint = result.header.client_endpoint()
        assert endpoint is not None
        writer.write(pack_endpoint(endpoint.ip, endpoint.port))
        await writer.drain()


def _client(port: int, payload: bytes) -> tuple[tuple[str, int], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        local = sock.getsockname()
        sock.sendall(payload)
        reply = b""
        while len(reply) < 8:
            chunk = sock.recv(8 - len(reply))
            if not chunk:
                break
            reply += chunk
        return local, reply


@pytest.mark.timeout(60)
async def test_parser_reports_the_real_client_behind_haproxy(tmp_path):
    backend = EchoEndpointServer()
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    backend_port = server.sockets[0].getsockname()[1]
    try:
        with haproxy(tmp_path, backend_port) as port:
            for payload in (b"fmi_pair3_5", encode_v2_request("fmi_pair5_3")):
                local, reply = await asyncio.to_thread(_client, port, payload)
                assert unpack_endpoint(reply) == local  # the client's own ip:port
                # (the balancer's own connection to us comes from another port)
                header = next(h for h in backend.headers if h.source == local)
                assert header.family == "inet" and header.transport == "stream"
                assert header.destination == ("127.0.0.1", port)
            assert isinstance(backend.requests[0], V1Request)
            assert backend.requests[0].name == b"fmi_pair3_5"
            assert isinstance(backend.requests[1], V2Request)
            async with asyncio.timeout(10):
                while not any(h.command == "local" for h in backend.headers):
                    await asyncio.sleep(0.05)  # HAProxy's health checks (every 200 ms)
            assert backend.errors == []
    finally:
        server.close()
        await server.wait_closed()


async def test_client_bypassing_the_balancer_is_refused_at_once():
    backend = EchoEndpointServer()
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, reply = await asyncio.to_thread(_client, port, b"fmi_pair3_5")
        assert reply == b""  # closed without an answer
        assert [e.proxy_reason.value for e in backend.errors] == ["proxy_bad_signature"]
    finally:
        server.close()
        await server.wait_closed()

"""A minimal replica server for the tests: the wiring the split server needs, in small.

PROXY v2 header (optional) -> TCPunch request -> SharedRoom.arrive -> replies; the
waiter's replica answers on PeerArrived. Test equipment only: the real server adds
deadlines per state, limits, metrics and the fork commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from rendezvous.proxy_protocol import Parsed, ProxyHeaderReader
from rendezvous.shared_room import (
    Displaced,
    Lost,
    Paired,
    PeerArrived,
    Removed,
    RoomEvent,
    SharedRoom,
    Waiting,
)
from tcpunch import (
    Endpoint,
    NeedMoreData,
    RequestReader,
    Status,
    V1Request,
    V2Request,
    V2Response,
    encode_v2_response,
    pack_endpoint,
)


@dataclass(eq=False)
class Client:
    writer: asyncio.StreamWriter
    endpoint: Endpoint
    protocol: str
    done: asyncio.Event = field(default_factory=asyncio.Event)


def reply(client: Client, peer: Endpoint, token: str | None) -> None:
    """The PAIRED answer: v1's 8 bytes, v2's 51."""
    if client.protocol == "v1":
        client.writer.write(pack_endpoint(peer.ip, peer.port))
    else:
        response = V2Response(Status.PAIRED, client.endpoint, peer, token or "")
        client.writer.write(encode_v2_response(response))


class ReplicaServer:
    def __init__(self, url: str, replica_id: str, prefix: str, proxy_protocol: bool) -> None:
        self.room = SharedRoom(url, self.on_event, replica_id=replica_id, prefix=prefix)
        self.proxy_protocol = proxy_protocol
        self.server: asyncio.Server | None = None
        self.served: list[Endpoint] = []  # clients this replica took requests from

    async def start(self) -> int:
        await self.room.start(ready_timeout=10)
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        await self.room.stop()

    def on_event(self, event: RoomEvent) -> None:
        client = event.waiter.handle
        assert isinstance(client, Client)
        if isinstance(event, PeerArrived):
            reply(client, event.peer, event.waiter.token)
        elif isinstance(event, Lost) and client.protocol == "v2":
            client.writer.write(encode_v2_response(V2Response(Status.ERROR)))
        else:
            assert isinstance(event, Displaced | Removed | Lost)
        client.done.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                await self._serve(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip, port = writer.get_extra_info("peername")[:2]
        endpoint, data = Endpoint(ip, port), b""
        if self.proxy_protocol:
            header = ProxyHeaderReader()
            parsed: object = NeedMoreData
            while parsed is NeedMoreData:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                parsed = header.feed(chunk)
            assert isinstance(parsed, Parsed)
            endpoint = parsed.header.client_endpoint() or endpoint
            data = parsed.rest
            if parsed.header.command == "local":
                return  # the balancer's health check
        requests = RequestReader()
        request: object = NeedMoreData
        while request is NeedMoreData:
            data = data or await reader.read(4096)
            if not data:
                return
            request, data = requests.feed(data), b""
        if isinstance(request, V1Request):
            name, protocol, token = request.name, "v1", None
        else:
            assert isinstance(request, V2Request)
            name, protocol, token = request.name.encode(), "v2", request.token or None
        self.served.append(endpoint)
        client = Client(writer, endpoint, protocol)
        outcome = await self.room.arrive(
            name, client, endpoint, "v1" if protocol == "v1" else "v2", time.time(), token
        )
        if isinstance(outcome, Paired):
            reply(client, outcome.waiter.endpoint, outcome.token)
        elif isinstance(outcome, Waiting):
            if protocol == "v2":
                waiting = V2Response(Status.WAITING, endpoint, token=outcome.waiter.token or "")
                writer.write(encode_v2_response(waiting))
            try:
                await asyncio.wait_for(client.done.wait(), 8)
            except TimeoutError:
                await self.room.leave(outcome.waiter, time.time())
                return
        elif protocol == "v2":
            writer.write(encode_v2_response(V2Response(Status.ERROR)))
        await writer.drain()

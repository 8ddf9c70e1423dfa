"""Test clients that speak the TCPunch wire over real loopback sockets, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from tcpunch import (
    V2_RESPONSE_SIZE,
    Endpoint,
    V2Response,
    decode_v2_response,
    encode_v2_request,
    unpack_endpoint,
)

DEADLINE = 5.0


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def local(self) -> Endpoint:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return Endpoint(host, port)

    async def read(self, n: int, timeout: float = DEADLINE) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def read_endpoint(self, timeout: float = DEADLINE) -> Endpoint:
        return unpack_endpoint(await self.read(8, timeout))

    async def read_v2(self, timeout: float = DEADLINE) -> V2Response:
        return decode_v2_response(await self.read(V2_RESPONSE_SIZE, timeout))

    async def read_rest(self, timeout: float = DEADLINE) -> bytes:
        """Everything until the server closes (fails if it does not within ``timeout``)."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def closed_without_data(self, timeout: float = DEADLINE) -> bool:
        return await self.read_rest(timeout) == b""

    async def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives (and no close) for ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except asyncio.TimeoutError:
            return True
        return False

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), DEADLINE)


async def connect(port: int, data: bytes | None = None, host: str = "127.0.0.1") -> Client:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DEADLINE)
    client = Client(reader, writer)
    if data is not None:
        client.send(data)
        await writer.drain()
    return client


async def v1(port: int, name: bytes | str) -> Client:
    """A v1 client that sent its name and read its own endpoint (as the C client does)."""
    raw = name.encode() if isinstance(name, str) else name
    client = await connect(port, raw)
    own = await client.read_endpoint()
    assert own == client.local, f"v1 reply {own} is not the client's endpoint {client.local}"
    return client


async def v2(port: int, name: str, token: str = "", flags: int = 0) -> Client:
    return await connect(port, encode_v2_request(name, token, flags))


async def wait_for(condition, timeout: float = 5.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)

"""A little load of every kind the metrics count, over real loopback sockets."""

from __future__ import annotations

import asyncio
import time

from tcpunch import Status
from tcpunch.relay import OBSERVE_REQUEST, RelayRequest, encode_relay_request
from tests.server.wire import connect, v1, v2

EXPECTED = {"pairings": 3, "requests": 9, "refusals": 1, "expirations": 1, "abandoned": 1}
"""What drive_load adds to the server's counters (the server needs --peer-timeout < 5).
Requests count every connection, the refused oversized one too (as protocol "unknown")."""


async def drive_load(port: int) -> None:
    """Three pairings (v1, v2, mixed), an oversized request, an expiry, an abandoned wait."""
    stamp = f"{time.time_ns()}"
    a = await v1(port, f"obs_v1_{stamp}")
    b = await v1(port, f"obs_v1_{stamp}")
    await a.read_endpoint()
    await b.read_endpoint()
    c = await v2(port, f"obs_v2_{stamp}")
    assert (await c.read_v2()).status is Status.WAITING
    await asyncio.sleep(0.05)  # a wait long enough to land above the first bucket
    d = await v2(port, f"obs_v2_{stamp}")
    assert (await d.read_v2()).status is Status.PAIRED
    assert (await c.read_v2()).status is Status.PAIRED
    e = await v1(port, f"obs_mixed_{stamp}")
    f = await v2(port, f"obs_mixed_{stamp}")
    assert (await f.read_v2()).status is Status.PAIRED
    g = await connect(port, b"x" * 150)  # oversized: refused
    assert await g.closed_without_data()
    h = await v2(port, f"obs_expires_{stamp}")
    assert (await h.read_v2()).status is Status.WAITING
    assert (await h.read_v2(timeout=5)).status is Status.TIMEOUT
    i = await v1(port, f"obs_abandons_{stamp}")
    await i.close()
    for client in (a, b, c, d, e, f, g, h):
        await client.close()
    await drive_relay(port, stamp)


async def drive_relay(port: int, stamp: str) -> None:
    """A relay session carrying 1000 bytes, a third end refused as busy, an OBSERVE."""
    request = encode_relay_request(RelayRequest(f"obs_relay_{stamp}".encode(), b"s" * 16))
    ends = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        ends.append((reader, writer))
        await asyncio.sleep(0.05)
    (ra, wa), (rb, _), (rc, _) = ends
    assert await ra.readexactly(4) == b"\x01\x00\x02\x00"  # waiting, then accepted
    assert await rb.readexactly(2) == b"\x02\x00"
    assert await rc.readexactly(2) == b"\x03\x04"  # refused: busy
    wa.write(b"r" * 1000)
    assert len(await rb.readexactly(1000)) == 1000
    await asyncio.sleep(0.1)  # a session that lasts a moment
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(OBSERVE_REQUEST)
    assert len(await reader.readexactly(8)) == 8
    for _, w in (*ends, (reader, writer)):
        w.close()

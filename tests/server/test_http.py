"""The HTTP endpoint (/livez, /readyz, /health, /metrics) and drain, in process."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rendezvous import __version__
from tcpunch import Status, encode_v2_request
from tests.server.wire import connect, v1, v2, wait_for


async def get(server, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    url = f"http://127.0.0.1:{server.http_port}{path}"
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_livez_readyz_health(server, unique):
    assert await get(server, "/livez") == (200, "ok\n")
    assert (await get(server, "/readyz"))[0] == 200
    a = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 1)
    status, body = await get(server, "/health")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok" and health["version"] == __version__
    assert health["waiting"] == 1 and health["open_connections"] == 1
    assert health["pairings"] == 0 and health["uptime_seconds"] >= 0
    await a.close()


async def test_metrics_values(make_server, unique):
    server = await make_server(peer_timeout=0.2)
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    b = await v2(server.port, name)
    await b.read_v2()
    c = await v2(server.port, unique())  # expires
    await c.read_v2()
    assert (await c.read_v2(timeout=3)).status is Status.TIMEOUT
    d = await v1(server.port, unique())  # abandons
    await wait_for(lambda: len(server.room) == 1)
    await d.close()
    e = await connect(server.port, b"x" * 150)  # oversized
    await e.read_rest()
    f = await v1(server.port, unique())  # still waiting at scrape time
    await wait_for(lambda: len(server.room) == 1)
    status, text = await get(server, "/metrics")
    assert status == 200
    m = samples(text)
    assert m[("rendezvous_connections_total", (("protocol", "v1"),))] == 3
    assert m[("rendezvous_connections_total", (("protocol", "v2"),))] == 2
    assert m[("rendezvous_pairings_total", (("protocol", "mixed"),))] == 1
    assert m[("rendezvous_pairings_total", (("protocol", "v1"),))] == 0
    assert m[("rendezvous_waiting_clients", ())] == 1
    assert m[("rendezvous_pairing_wait_seconds_count", ())] == 1
    assert m[("rendezvous_rejected_total", (("reason", "oversized"),))] == 1
    assert m[("rendezvous_expired_total", ())] == 1
    assert m[("rendezvous_abandoned_total", ())] == 1
    for client in (a, b, c, e, f):
        await client.close()


async def test_two_servers_in_one_process_have_separate_metrics(make_server, unique):
    one = await make_server()
    two = await make_server()
    a = await v1(one.port, unique())
    await wait_for(lambda: len(one.room) == 1)
    m1 = samples((await get(one, "/metrics"))[1])
    m2 = samples((await get(two, "/metrics"))[1])
    assert m1[("rendezvous_waiting_clients", ())] == 1
    assert m2[("rendezvous_waiting_clients", ())] == 0
    await a.close()


async def test_capacity_and_readiness_gauges(make_server, unique):
    """open/max connections and ready follow the server: ready drops to 0 at the cap."""
    server = await make_server(max_connections=2)
    m = samples((await get(server, "/metrics"))[1])
    assert m[("rendezvous_open_connections", ())] == 0
    assert m[("rendezvous_max_connections", ())] == 2
    assert m[("rendezvous_ready", ())] == 1
    a = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 1)
    m = samples((await get(server, "/metrics"))[1])
    assert m[("rendezvous_open_connections", ())] == 1
    assert m[("rendezvous_ready", ())] == 1
    b = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 2)
    m = samples((await get(server, "/metrics"))[1])
    assert m[("rendezvous_open_connections", ())] == 2
    assert m[("rendezvous_ready", ())] == 0
    assert (await get(server, "/readyz"))[0] == 503
    await a.close()
    await b.close()
    await wait_for(lambda: not server.connections)
    m = samples((await get(server, "/metrics"))[1])
    assert m[("rendezvous_open_connections", ())] == 0
    assert m[("rendezvous_ready", ())] == 1


async def test_drain_finishes_requests_in_flight_and_closes_the_rest(make_server, unique):
    server = await make_server(request_timeout=5)
    name = unique()
    waiter = await v2(server.port, name)
    await waiter.read_v2()
    v1_waiter = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 2)
    # A request in flight: its first half has arrived, the rest comes during the drain.
    raw = encode_v2_request(name)
    in_flight = await connect(server.port, raw[:120])
    await wait_for(lambda: server.reading == 1)
    drain = asyncio.create_task(server.drain(timeout=3))
    await wait_for(lambda: server.draining)
    assert (await get(server, "/readyz"))[0] == 503
    assert (await get(server, "/livez"))[0] == 200
    in_flight.send(raw[120:])
    assert (await in_flight.read_v2()).status is Status.PAIRED
    assert (await waiter.read_v2()).status is Status.PAIRED
    await asyncio.wait_for(drain, 5)
    assert await v1_waiter.read_rest() == b""  # closed at the end of the drain
    try:
        late = await connect(server.port, b"late")
    except OSError:
        pass  # refused: not accepting any more
    else:
        assert await late.read_rest() == b""
        await late.close()
    for client in (waiter, v1_waiter, in_flight):
        await client.close()


async def test_drain_gives_v2_waiters_timeout_and_ends_early(make_server, unique):
    server = await make_server()
    waiter = await v2(server.port, unique())
    token = (await waiter.read_v2()).token
    # Nothing in flight: the drain ends without sitting out its 60 s.
    await asyncio.wait_for(server.drain(timeout=60), 10)
    timeout = await waiter.read_v2()
    assert timeout.status is Status.TIMEOUT and timeout.token == token
    await waiter.close()


def test_every_refusal_reason_is_exported_from_the_start():
    """A reason the code refuses for but REFUSAL_REASONS lacks would appear at 1, and
    Prometheus's rate() never sees a series' first increase (alerts would miss it)."""
    import re
    from pathlib import Path

    from rendezvous import connection as connection_module
    from rendezvous import credentials
    from rendezvous.metrics import REFUSAL_REASONS, Metrics

    # The auth policy's reasons reach refuse() as Decision.reason, not as literals.
    used = {"malformed", *connection_module._REFUSAL_REASONS.values()}
    used |= set(credentials.REFUSAL_REASONS)
    # PROXY v2 headers are refused by their parser's reason (--proxy-protocol).
    from rendezvous.proxy_protocol import ProxyReason

    used |= {reason.value for reason in ProxyReason}
    for path in Path(connection_module.__file__).parent.glob("*.py"):
        text = path.read_text()
        calls = r'(?:refuse(?:_unread)?\(\s*\w+,|reject\(|Refused\()\s*"(\w+)"'
        used |= set(re.findall(calls, text))
        # a reason chosen into a variable, then counted: reason = "a" if ... else "b"
        for pair in re.findall(r'reason = "(\w+)" if .+ else "(\w+)"', text):
            used |= set(pair)
        used |= set(re.findall(r'reason = "(\w+)"\s*\n\s*self\.metrics\.reject\(reason\)', text))
        # the shared room's Lua scripts refuse too (--redis): {'refused', 'reason', ...}
        used |= set(re.findall(r"\{'refused', '(\w+)'", text))
    assert len(used) >= 10, sorted(used)  # the scan finds the calls
    assert used == set(REFUSAL_REASONS)
    m = samples(generate_latest(Metrics().registry).decode())
    for reason in REFUSAL_REASONS:
        assert m[("rendezvous_rejected_total", (("reason", reason),))] == 0

"""The alert rules fire on a real Prometheus scraping a real server in trouble.

promtool's unit tests check the rules' logic on made-up series; this checks that the
expressions match the series and labels the server really exports. The rules are loaded
with ``for: 0s`` (no waiting minutes) and the two rate thresholds lowered to 0 (a test
cannot refuse 0.5 requests a second for long); everything else is as shipped.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import yaml

from tcpunch.relay import RelayRequest, encode_relay_request
from tests.monitoring.stack import RULES, Prometheus, prometheus, rendezvous_server
from tests.server.wire import Client, connect, v1, v2

LOWERED = {"RendezvousRefusalRateHigh", "RendezvousExpiryRateHigh"}
FIRE_WITH_SERVER_UP = (
    "RendezvousNotReady",
    "RendezvousRelaySaturated",
    "RendezvousConnectionsNearLimit",
    "RendezvousRefusalRateHigh",
    "RendezvousExpiryRateHigh",
)


def quick_rules(directory: Path) -> Path:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
            if rule["alert"] in LOWERED:
                rule["expr"], count = re.subn(r">\s*[0-9.]+\s*$", "> 0", rule["expr"].strip())
                assert count == 1, rule["expr"]
    path = directory / "quick.rules.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def firing(api: Prometheus, instance: str) -> set[str]:
    alerts = api.get("/api/v1/alerts")["data"]["alerts"]
    return {
        a["labels"]["alertname"]
        for a in alerts
        if a["state"] == "firing" and a["labels"].get("instance") == instance
    }


def wait_firing(api: Prometheus, instance: str, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not wanted <= (now := firing(api, instance)):
        assert time.monotonic() < deadline, f"firing {sorted(now)}, want {sorted(wanted)}"
        time.sleep(0.25)


async def relay_session(port: int) -> list[asyncio.StreamWriter]:
    """Two ends of one relay session: the relay's cap of 1 is reached."""
    request = encode_relay_request(RelayRequest(f"fire_relay_{time.time_ns()}".encode(), b"r" * 16))
    ends = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        ends.append((reader, writer))
        await asyncio.sleep(0.05)
    assert await ends[1][0].readexactly(2) == b"\x02\x00"  # accepted: the session runs
    return [writer for _, writer in ends]


async def trouble(port: int) -> list[Client]:
    """A refusal and an expiry, then two waiters: the cap of 2 is reached."""
    refused = await connect(port, b"x" * 150)
    assert await refused.closed_without_data()
    expires = await v2(port, f"fire_expires_{time.time_ns()}")
    await expires.read_v2()
    await expires.read_v2(timeout=5)  # TIMEOUT after --peer-timeout
    await expires.close()
    return [await v1(port, f"fire_wait_{time.time_ns()}_{i}") for i in range(2)]


@pytest.mark.timeout(180)
def test_every_alert_fires_on_a_real_server_in_trouble(tmp_path: Path) -> None:
    args = ("--peer-timeout", "0.5", "--max-connections", "2", "--relay-max-sessions", "1")
    loop = asyncio.new_event_loop()
    with (
        rendezvous_server(tmp_path / "server.log", *args) as server,
        prometheus(tmp_path, server.instance, quick_rules(tmp_path)) as api,
    ):
        try:
            api.wait_until(f'up{{instance="{server.instance}"}} == 1', "the first scrape")
            time.sleep(1.5)  # one more scrape: every series is in before the trouble
            assert firing(api, server.instance) == set()
            relayed = loop.run_until_complete(relay_session(server.port))  # before the cap
            waiters = loop.run_until_complete(trouble(server.port))
            wait_firing(api, server.instance, set(FIRE_WITH_SERVER_UP))
            for client in waiters:
                loop.run_until_complete(client.close())
            for writer in relayed:
                writer.close()
        finally:
            loop.close()
        server.proc.kill()
        server.proc.wait(timeout=10)
        wait_firing(api, server.instance, {"RendezvousDown"})
    shipped = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert shipped == {*FIRE_WITH_SERVER_UP, "RendezvousDown"}, "a new alert needs a case here"

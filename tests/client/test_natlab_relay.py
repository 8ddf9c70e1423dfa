"""The relay and NAT discovery through real NATs (network namespaces; needs root).

Symmetric NATs (``random_fully``) on both sides or one: discovery says port-dependent
and the relay carries 4 MiB each way; plain MASQUERADE: endpoint-independent; a server
started with --no-relay: the named error.
"""

from __future__ import annotations

import os

import pytest

from testbed import natlab
from testbed.natlab import lab_server
from tests.client.ranks import run_ranks
from tests.facilities import require

pytestmark = pytest.mark.netns

DISCOVERY_PORT = 10002


@pytest.fixture(scope="module")
def lab_available() -> None:
    require(natlab.available(), "root with network namespaces, ip and iptables (NAT lab)")


def run_relay(lab: natlab.NatLab, port: int, tag: str) -> list[dict]:
    name = f"relay-{os.getpid()}-{tag}"
    hosts = [lab.host_a, lab.host_b]
    results = run_ranks(
        lambda side: [
            "-m",
            "tests.client.relay_peer",
            lab.server_ip,
            str(port),
            str(DISCOVERY_PORT),
            name,
            str(side),
        ],
        2,
        timeout=60,
        prefix_for=lambda side: lab.exec_prefix(hosts[side]),
    )
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    return [r.json() for r in results]


@pytest.mark.parametrize("random_fully", [True, (True, False)], ids=["both", "one"])
def test_relay_through_symmetric_nats(lab_available, random_fully) -> None:
    with natlab.NatLab(random_fully=random_fully) as lab, lab_server(lab) as port:
        a, b = run_relay(lab, port, "sym")
    symmetric = natlab._per_router(random_fully)
    for side, is_symmetric in zip((a, b), symmetric, strict=True):
        assert side["ok"] is True, side  # 4 MiB each way, intact, through the server
        assert side["peer"] == [lab.server_ip, port]
        expected = "port-dependent" if is_symmetric else "endpoint-independent"
        assert side["mapping"] == expected, side
        if is_symmetric:
            assert side["seen_ports"][0] != side["seen_ports"][1]


def test_discovery_behind_plain_masquerade(lab_available) -> None:
    with natlab.NatLab() as lab, lab_server(lab) as port:
        a, b = run_relay(lab, port, "plain")
    for side in (a, b):
        assert side["mapping"] == "endpoint-independent", side
        assert side["ok"] is True


def test_relay_refused_by_a_no_relay_server(lab_available) -> None:
    with natlab.NatLab(random_fully=True) as lab, lab_server(lab, ["--no-relay"]) as port:
        a, b = run_relay(lab, port, "off")
    for side in (a, b):
        assert side["ok"] is False and side["error"] == "RelayRefused", side
        assert "--no-relay" in side["text"]
        assert side["mapping"] == "port-dependent"

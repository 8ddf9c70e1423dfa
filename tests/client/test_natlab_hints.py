"""NAT findings through the rendezvous, in the NAT lab (network namespaces; needs root).

A symmetric NAT on one side: both sides skip the punch and meet in the relay at once.
Two port-preserving NATs: still direct, each side endpoint-independent. A host that
accepts no inbound connection: undeclared, the punch fails for its budget and the pair
relays; declared (``nat="no-inbound"``), both sides relay at once; relay="never" fails
naming the finding. Counts and flags are asserted, never timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testbed import natlab
from testbed.natlab import lab_server
from tests.client.ranks import run_ranks
from tests.facilities import require

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def lab_available() -> None:
    require(natlab.available(), "root with network namespaces, ip and iptables (NAT lab)")


def run_sides(
    lab: natlab.NatLab,
    port: int,
    *,
    relay: str = "auto",
    nat: tuple[str, str] = ("auto", "auto"),
    punch_timeout: float = 3.0,
) -> list[dict]:
    """tests.client.nat_peer on host_a and host_b: pair, swap arrays, an allreduce."""
    name = f"hints-{os.getpid()}-{time.monotonic_ns()}"
    hosts = [lab.host_a, lab.host_b]
    results = run_ranks(
        lambda side: [
            "-m", "tests.client.nat_peer", lab.server_ip, str(port), name, str(side), "v2",
            relay, nat[side], str(punch_timeout),
        ],
        2,
        timeout=90,
        prefix_for=lambda side: lab.exec_prefix(hosts[side]),
    )  # fmt: skip
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    return [r.json() for r in results]


def assert_relayed_at_once(side: dict) -> None:
    assert side["ok"] and side["comm_ok"], side  # the link carries data and collectives
    link = side["link"]
    assert link["path"] == "relay", link
    assert link["punch_failures"] == 0 and link["pairings"] == 1, link  # no punch at all
    assert link["why"].startswith("skipped the punch"), link


@pytest.mark.parametrize("symmetric", [(True, False), (False, True), (True, True)])
def test_a_symmetric_nat_makes_both_sides_skip_the_punch(lab_available, symmetric) -> None:
    with natlab.NatLab(random_fully=symmetric) as lab, lab_server(lab) as port:
        sides = run_sides(lab, port)
    labels = ["port-dependent" if s else "endpoint-independent" for s in symmetric]
    for me, side in enumerate(sides):
        assert_relayed_at_once(side)
        assert side["link"]["nat"] == labels[me], side  # found by NAT discovery
        assert side["link"]["peer_nat"] == labels[1 - me], side  # told by the rendezvous
        assert side["peer"][0] == lab.server_ip


def test_port_preserving_nats_still_punch_knowing_both_classes(lab_available) -> None:
    with natlab.NatLab() as lab, lab_server(lab) as port:
        sides = run_sides(lab, port)
    for side in sides:
        assert side["ok"] and side["comm_ok"], side
        link = side["link"]
        assert link["path"] == "direct" and link["why"].startswith("punch: "), link
        assert link["nat"] == link["peer_nat"] == "endpoint-independent", link
    a, b = sides
    assert a["peer"][0] == lab.router_b_public and b["peer"][0] == lab.router_a_public


PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()
    print("open")
except ConnectionRefusedError:
    print("reset")
except OSError:
    print("silent")
"""

LISTEN = r"""
import socket, sys
servers = [socket.create_server((ip, 47001)) for ip in sys.argv[1:]]
print("up", flush=True)
sys.stdin.read()
"""


def test_the_no_inbound_host_completes_no_connection_but_to_the_server(lab_available) -> None:
    """host_a drops every inbound SYN and SYN-ACK not from the server: its connections to
    a stranger's open port never complete (silent), to the server's address they do;
    host_b (no rule) reaches both."""
    with natlab.NatLab(no_inbound=(True, False)) as lab:
        listener = subprocess.Popen(
            [*lab.exec_prefix(lab.public), sys.executable, "-c", LISTEN, lab.server_ip,
             lab.stranger_ip],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
            seen = {}
            for host in (lab.host_a, lab.host_b):
                for ip in (lab.server_ip, lab.stranger_ip):
                    out = subprocess.run(
                        [*lab.exec_prefix(host), sys.executable, "-c", PROBE, ip, "47001"],
                        capture_output=True, text=True, timeout=30,
                    )  # fmt: skip
                    seen[host, ip] = out.stdout.strip()
        finally:
            listener.kill()
            listener.wait()
            for stream in (listener.stdin, listener.stdout):
                if stream is not None:
                    stream.close()
    assert seen[lab.host_a, lab.server_ip] == "open"
    assert seen[lab.host_a, lab.stranger_ip] == "silent"
    assert seen[lab.host_b, lab.server_ip] == seen[lab.host_b, lab.stranger_ip] == "open"


def test_an_undeclared_no_inbound_host_relays_after_the_punch_budget(lab_available) -> None:
    """Nothing can tell from outside that host_a takes no inbound connection: both sides
    punch for the (small) budget, fail, and meet in the relay; the link works."""
    with natlab.NatLab(no_inbound=(True, False)) as lab, lab_server(lab) as port:
        sides = run_sides(lab, port, punch_timeout=1.0)
    for side in sides:
        assert side["ok"] and side["comm_ok"], side
        link = side["link"]
        assert link["path"] == "relay" and link["punch_failures"] >= 1, link
        assert link["nat"] == link["peer_nat"] == "endpoint-independent", link


def test_a_declared_no_inbound_host_makes_both_sides_relay_at_once(lab_available) -> None:
    with natlab.NatLab(no_inbound=(True, False)) as lab, lab_server(lab) as port:
        a, b = run_sides(lab, port, nat=("no-inbound", "auto"))
    for side in (a, b):
        assert_relayed_at_once(side)
    assert (a["link"]["nat"], a["link"]["peer_nat"]) == ("no-inbound", "endpoint-independent")
    assert (b["link"]["nat"], b["link"]["peer_nat"]) == ("endpoint-independent", "no-inbound")
    assert "the peer's host accepts no inbound connection" in b["link"]["why"]


def test_relay_never_punches_anyway_and_names_the_finding(lab_available) -> None:
    with natlab.NatLab(no_inbound=(True, False)) as lab, lab_server(lab) as port:
        a, b = run_sides(lab, port, relay="never", nat=("no-inbound", "auto"), punch_timeout=1.0)
    for side in (a, b):
        assert side["ok"] is False and side["error"] == "PunchFailed", side
    assert "the peer's no-inbound" in b["text"], b
    assert "our NAT no-inbound" in a["text"], a

"""How pair() picks its path from both sides' NAT findings, over a real loopback server.

The decision tables (fmi_client.natpath) are symmetric, so both sides decide alike; the
process's own finding is probed once per server (failures remembered); a side that
declares "no-inbound" makes both sides relay at once, without a punch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fmi_client import pair
from fmi_client.natpath import PATHS, PUNCHABLE, NatFindings, choose_path
from rendezvous.embedded import BackgroundServer
from tcpunch import Endpoint, NatClass
from tests.client.twosides import two_sides

EI, PD, NI, U = (
    NatClass.ENDPOINT_INDEPENDENT,
    NatClass.PORT_DEPENDENT,
    NatClass.NO_INBOUND,
    NatClass.UNKNOWN,
)


@pytest.fixture(scope="module")
def discovering() -> Iterator[BackgroundServer]:
    """A server with a NAT discovery port (any free one) and the relay on."""
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, discovery_port=0) as srv:
        yield srv


def discovery_port(srv: BackgroundServer) -> int:
    assert srv.server is not None and srv.server.discovery_port
    return srv.server.discovery_port


def probes(srv: BackgroundServer) -> int:
    assert srv.server is not None and srv.server.relay is not None
    return srv.server.relay.metrics.discovery


def test_the_tables_cover_every_pair_and_are_symmetric() -> None:
    classes = list(NatClass)
    assert set(PUNCHABLE) == set(itertools.product(classes, classes))
    for ours, theirs in PUNCHABLE:
        assert PUNCHABLE[ours, theirs] == PUNCHABLE[theirs, ours]
        for relay in ("auto", "never", "always"):  # both sides reach the same path
            assert choose_path(relay, ours, theirs).path == choose_path(relay, theirs, ours).path
    assert {ours for (ours, theirs), ok in PUNCHABLE.items() if ok} == {U, EI}
    assert set(PATHS) == set(itertools.product(("auto", "never", "always"), (True, False)))


def test_the_choice_says_why() -> None:
    assert choose_path("auto", EI, PD).why == (
        "skipped the punch: the peer's NAT maps per destination (port-dependent, symmetric)"
    )
    assert choose_path("auto", NI, PD).why.startswith(
        "skipped the punch: our host accepts no inbound connection and the peer's NAT"
    )
    never = choose_path("never", EI, NI)
    assert never.path == "punch" and "peer's host accepts no inbound" in never.why
    assert (
        choose_path("auto", U, EI).why == "punch: our NAT unknown, the peer's endpoint-independent"
    )
    assert choose_path("always", EI, EI).path == "relay"


def test_the_finding_is_probed_once_per_server(discovering) -> None:
    findings = NatFindings()
    key = (discovering.host, discovering.port, discovery_port(discovering))
    before = probes(discovering)
    deadline = time.monotonic() + 5
    assert findings.own(key, deadline) is EI  # loopback: no NAT, the same port seen twice
    assert probes(discovering) == before + 2  # the discovery port and OBSERVE: once
    assert findings.own(key, deadline) is EI
    assert probes(discovering) == before + 2
    assert findings.own((*key[:2], 0), deadline) is U  # discovery off: nothing probed
    assert probes(discovering) == before + 2


@contextlib.contextmanager
def mute_discovery() -> Iterator[tuple[int, list[int]]]:
    """A discovery port that accepts and closes without an answer: (its port, one entry
    per connection it took)."""
    mute = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def close_each() -> None:
        while True:
            try:
                conn, _ = mute.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    try:
        yield mute.getsockname()[1], accepted
    finally:
        mute.close()
        thread.join(5)


def test_a_failed_probe_is_remembered_and_reaches_no_rendezvous_port() -> None:
    """A discovery port that accepts and closes without an answer: unknown, once. A
    rendezvous port that is not ours (here: a bare listener) never sees the probe when
    the discovery port refuses."""
    rendezvous = socket.create_server(("127.0.0.1", 0))
    bare = socket.create_server(("127.0.0.1", 0))
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: refuses
    try:
        with mute_discovery() as (mute_port, accepted):
            findings = NatFindings()
            key = ("127.0.0.1", rendezvous.getsockname()[1], mute_port)
            assert findings.own(key, time.monotonic() + 5) is U
            assert findings.own(key, time.monotonic() + 5) is U
            assert len(accepted) == 1
        other = ("127.0.0.1", bare.getsockname()[1], refused.getsockname()[1])
        assert findings.own(other, time.monotonic() + 5) is U
        bare.setblocking(False)
        with pytest.raises(BlockingIOError):
            bare.accept()  # the probe never connected to it
    finally:
        rendezvous.close()
        bare.close()
        refused.close()


def test_a_rewritten_port_makes_an_unknown_class_port_dependent() -> None:
    findings = NatFindings()
    key = ("192.0.2.1", 10000, 0)
    same = Endpoint("192.0.2.9", 4000)
    assert findings.learned(key, same, same) is U
    assert findings.learned(key, Endpoint("192.0.2.9", 4001), same) is PD
    assert findings.own(key, time.monotonic() + 1) is PD  # remembered for the next pairing


def unique(what: str) -> str:
    return f"{what}-{os.getpid()}-{time.monotonic_ns()}"


def exchange(a: socket.socket, b: socket.socket) -> None:
    a.sendall(b"from a")
    b.sendall(b"from b")
    assert b.recv(16) == b"from a" and a.recv(16) == b"from b"


def test_both_sides_relay_at_once_when_one_declares_no_inbound(discovering) -> None:
    name = unique("no-inbound")
    a, b = two_sides(
        lambda i: pair(
            name, discovering.host, discovering.port, timeout=20,
            discovery_port=discovery_port(discovering),
            nat="no-inbound" if i == 0 else "auto",
        )
    )  # fmt: skip
    with a, b:
        exchange(a, b)
        for side in (a, b):
            assert side.link.path == "relay" and side.link.punch_failures == 0, side.link
            assert side.link.pairings == 1 and "skipped the punch" in side.link.why
        assert (a.link.nat, a.link.peer_nat) == ("no-inbound", "endpoint-independent")
        assert (b.link.nat, b.link.peer_nat) == ("endpoint-independent", "no-inbound")
        assert "our host accepts no inbound" in a.link.why
        assert "the peer's host accepts no inbound" in b.link.why
        assert a.getpeername()[1] == discovering.port  # through the server


def test_two_endpoint_independent_sides_punch(discovering) -> None:
    name = unique("direct")
    a, b = two_sides(
        lambda i: pair(
            name, discovering.host, discovering.port, timeout=20,
            discovery_port=discovery_port(discovering),
        )
    )  # fmt: skip
    with a, b:
        exchange(a, b)
        for side in (a, b):
            assert side.link.path == "direct", side.link
            assert (side.link.nat, side.link.peer_nat) == ("endpoint-independent",) * 2
            assert side.link.why.startswith("punch: ")


def test_v1_learns_nothing_of_the_peer(discovering) -> None:
    name = unique("v1")
    a, b = two_sides(
        lambda i: pair(name, discovering.host, discovering.port, timeout=20, protocol="v1",
                       discovery_port=None)
    )  # fmt: skip
    with a, b:
        exchange(a, b)
        assert a.link.peer_nat == b.link.peer_nat == "unknown"
        assert a.link.path == "direct"


def test_bad_nat_and_discovery_port_are_refused(discovering) -> None:
    with pytest.raises(ValueError, match="nat must be one of"):
        pair("x", discovering.host, discovering.port, nat="symmetric")
    with pytest.raises(ValueError):
        pair("x", discovering.host, discovering.port, discovery_port=70000)


def first_request_flags(discovery: int | None) -> int:
    """The flags field of the v2 request pair() sends to a bare listener on ``port`` (a
    stand-in for a foreign v2 server, which has no discovery port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def take_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while len(data) < 141:
                chunk = conn.recv(141 - len(data))
                if not chunk:
                    break
                data += chunk
            seen.append(data)

    thread = threading.Thread(target=take_one, daemon=True)
    thread.start()
    try:
        with pytest.raises(Exception):  # noqa: B017  the stand-in never answers
            pair(unique("foreign"), "127.0.0.1", listener.getsockname()[1], timeout=1,
                 discovery_port=discovery)  # fmt: skip
    finally:
        thread.join(5)
        listener.close()
    assert len(seen) == 1 and len(seen[0]) == 141, seen
    return int.from_bytes(seen[0][137:141], "big")


def test_hints_go_only_to_a_server_that_answered_discovery(discovering) -> None:
    """A server without a discovery port (the fork's, a bare listener here) gets flags 0,
    exactly what it always got; our own server, once it answered discovery, is sent the
    hint bits (bit 1: "I read hints", bits 2-3: our class)."""
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: the probe is refused
    with refused:
        assert first_request_flags(refused.getsockname()[1]) == 0
    assert first_request_flags(None) == 0
    name = unique("hinted")
    a, b = two_sides(
        lambda i: pair(name, discovering.host, discovering.port, timeout=20,
                       discovery_port=discovery_port(discovering))
    )  # fmt: skip
    with a, b:
        assert a.link.peer_nat == "endpoint-independent"  # the hint crossed: bits were sent


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_relay_always_at_a_no_relay_server_says_why_and_what_to_do() -> None:
    """A user's mistake: relay="always" at a server started with --no-relay. Both sides get
    RelayRefused(DISABLED) at once (not at the deadline), whose text says what was wrong
    and what to do, and nothing is left open."""
    from fmi_client.relay import RelayRefused
    from tcpunch.relay import RelayRefusal

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, relay=False) as srv:
        before = open_fds()
        for attempt in range(3):
            name = unique(f"norelay{attempt}")
            started = time.monotonic()
            with pytest.raises(RelayRefused) as info:
                two_sides(
                    lambda i, name=name: pair(
                        name, srv.host, srv.port, timeout=20, relay="always", discovery_port=None
                    )
                )
            assert time.monotonic() - started < 10  # well before the 20 s deadline
            assert info.value.reason is RelayRefusal.DISABLED
            text = str(info.value)
            assert "--no-relay" in text and "relay='never'" in text, text
            assert info.value.__notes__ == ["the link went to the relay because: relay='always'"]
        time.sleep(0.2)  # the server side closes its ends
        assert open_fds() == before


def test_without_an_answering_discovery_port_the_link_and_log_say_why_nothing_is_known(
    caplog,
) -> None:
    """A server whose discovery port does not answer (here: a closed port): the log says
    so once, with what to do, and each link says that no hints crossed (a declared class
    stayed with us) instead of blaming the server; v1 says that v1 carries none."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
    dport = closed.getsockname()[1]
    caplog.set_level("INFO", logger="fmi_client")
    with closed, BackgroundServer(host="127.0.0.1", port=0, http_port=None) as srv:
        name = unique("unhinted")
        a, b = two_sides(
            lambda i: pair(
                name, srv.host, srv.port, timeout=20, discovery_port=dport,
                nat="no-inbound" if i == 0 else "auto",
            )
        )  # fmt: skip
        with a, b:
            exchange(a, b)
        v1 = two_sides(
            lambda i: pair(name + "-v1", srv.host, srv.port, timeout=20, protocol="v1",
                           discovery_port=None)
        )  # fmt: skip
        for side in v1:
            side.close()
    assert caplog.text.count(f"NAT discovery at 127.0.0.1 ports {srv.port} and {dport}") == 1
    assert "treats its NAT as unknown" in caplog.text
    unheard = f"no NAT hints: the server's NAT discovery port {dport} did not answer"
    assert a.link.path == b.link.path == "relay"
    assert a.link.why.startswith("skipped the punch: our host accepts no inbound"), a.link
    assert a.link.why.endswith(f"{unheard}, so the peer does not know we declared nat='no-inbound'")
    assert b.link.why.startswith("relayed: the peer did not re-pair (it relays instead)"), b.link
    assert b.link.problems and f"NAT findings: our NAT unknown; {unheard}." in b.link.problems[0]
    assert "the server passes no hints" not in caplog.text
    for side in v1:
        assert side.link.why.endswith("; v1 carries no NAT hints"), side.link.why


def test_a_discovery_port_that_is_another_service_gives_no_false_finding() -> None:
    """A user's mistake: ``discovery_port`` names a service that greets with a banner (as
    SSH does). Its first 8 bytes must not read as our endpoint (an SSH banner reads as
    83.83.72.45:12846, a "port-dependent" NAT that would relay every link): discovery
    fails naming the port, the class stays unknown, and the pair punches directly."""
    from fmi_client.errors import RendezvousUnreachable
    from fmi_client.relay import discover_nat

    banner = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def greet() -> None:
        while not stop.is_set():
            try:
                conn, _ = banner.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    bport = banner.getsockname()[1]
    try:
        with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as srv:
            with pytest.raises(RendezvousUnreachable, match=f"port {bport} answered"):
                discover_nat(srv.host, srv.port, bport, 0, time.monotonic() + 5)
            name = unique("banner")
            a, b = two_sides(
                lambda i: pair(name, srv.host, srv.port, timeout=20, discovery_port=bport)
            )
            with a, b:
                exchange(a, b)
                for side in (a, b):
                    assert side.link.path == "direct" and side.link.nat == "unknown", side.link
    finally:
        stop.set()
        banner.close()
        thread.join(5)


def test_link_info_prints_as_the_readme_shows() -> None:
    """``print(sock.link)``: every field by name, timings to the ms (as the README shows),
    so it reads at a glance."""
    from fmi_client.link import LinkInfo

    link = LinkInfo(path="relay", pairings=2, punch_s=0.0021828399985679425, verify_s=1.5)
    link.why = "relay='always'"
    assert repr(link) == (
        "LinkInfo(path='relay', name='', pairings=2, punch_failures=0, stalls=0, "
        "verified_bytes=0, punch_s=0.002, verify_s=1.500, problems=[], nat='unknown', "
        "peer_nat='unknown', why=\"relay='always'\")"
    )
    assert link == LinkInfo(path="relay", pairings=2, punch_s=0.0021828399985679425,
                            verify_s=1.5, why="relay='always'")  # fmt: skip


def test_a_relay_limit_that_cuts_the_link_check_is_named_and_not_hammered() -> None:
    """A server whose --relay-max-bytes is below the link check's bytes resets every
    relayed link during its check. Both sides re-pair with a growing pause (not
    thousands of times: each is a relay session on the server), and at the deadline
    both get LinkCheckFailed saying the relayed link was reset and what resets one,
    not a RelayRefused that blames the peer."""
    from fmi_client.errors import LinkCheckFailed

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, relay_max_bytes=100_000) as srv:
        assert srv.server is not None and srv.server.relay is not None
        before = open_fds()
        name = unique("capped")
        with pytest.raises(LinkCheckFailed) as info:
            two_sides(
                lambda i: pair(
                    name, srv.host, srv.port, timeout=4, relay="always", discovery_port=None
                )
            )
        text = str(info.value)
        assert "the relayed link" in text and "--relay-max-bytes" in text, text
        sessions = srv.server.relay.metrics.started
        assert 2 <= sessions <= 100, sessions  # without a pause: about 500 a second
        time.sleep(0.2)
        assert open_fds() == before


def test_a_failed_probe_is_tried_again_later_with_backoff(monkeypatch) -> None:
    """A warm process must not lose NAT hints for good to one failure at its start: the
    probe runs again after RETRY_FIRST (then twice as long), not on every pairing."""
    from fmi_client import natpath

    monkeypatch.setattr(natpath, "RETRY_FIRST", 0.3)
    rendezvous = socket.create_server(("127.0.0.1", 0))
    with rendezvous, mute_discovery() as (mute_port, accepted):
        findings = NatFindings()
        key = ("127.0.0.1", rendezvous.getsockname()[1], mute_port)
        assert findings.own(key, time.monotonic() + 5) is U
        assert findings.own(key, time.monotonic() + 5) is U  # within the wait: no probe
        assert len(accepted) == 1
        time.sleep(0.4)
        assert findings.own(key, time.monotonic() + 5) is U  # probed again, failed again
        assert len(accepted) == 2
        time.sleep(0.4)  # the wait doubled to 0.6 s: not yet
        assert findings.own(key, time.monotonic() + 5) is U
        assert len(accepted) == 2
        assert not findings.speaks_hints(key)

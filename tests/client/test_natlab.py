"""Through real NATs: two network namespaces behind two masquerading routers.

Port-preserving NATs (plain MASQUERADE) let the punch through and numpy arrays flow;
symmetric NATs (MASQUERADE --random-fully) get a relayed link (relay="never": PunchFailed, fast)
naming the symmetric NAT. Needs root (CI runs as root and must not skip these).
"""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time

import pytest

from fmi_client.punch import PUNCH_WINDOW
from testbed import natlab
from testbed.natlab import lab_server
from tests.client.ranks import REPO, python_env, run_ranks
from tests.facilities import require

pytestmark = pytest.mark.netns


def run_pair(lab: natlab.NatLab, port: int, protocol: str, relay: str = "auto") -> list[dict]:
    name = f"natlab-{os.getpid()}-{protocol}"
    hosts = [lab.host_a, lab.host_b]
    results = run_ranks(
        lambda side: [
            "-m",
            "tests.client.nat_peer",
            lab.server_ip,
            str(port),
            name,
            str(side),
            protocol,
            relay,
        ],
        2,
        timeout=60,
        prefix_for=lambda side: lab.exec_prefix(hosts[side]),
    )
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    return [r.json() for r in results]


@pytest.fixture(scope="module")
def lab_available() -> None:
    require(natlab.available(), "root with network namespaces, ip and iptables (NAT lab)")


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_punch_through_port_preserving_nats(lab_available, protocol: str) -> None:
    with natlab.NatLab() as lab, lab_server(lab) as port:
        a, b = run_pair(lab, port, protocol)
        assert a["ok"] and b["ok"], (a, b)
        assert a["comm_ok"] and b["comm_ok"], (a, b)  # allreduce across the two NATs
        assert a["path"] == b["path"] == "direct", (a, b)  # punched, not relayed
        # each side sees the other's router, never its private address
        assert a["peer"][0] == lab.router_b_public and b["peer"][0] == lab.router_a_public
        assert a["local"][0] == lab.host_a_ip and b["local"][0] == lab.host_b_ip
    assert not set(lab.namespaces) & set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )


@pytest.mark.parametrize("symmetric", [(True, True), (True, False)])
def test_symmetric_nats_get_a_relayed_link_that_carries_collectives(
    lab_available, symmetric: tuple[bool, bool]
) -> None:
    """relay="auto" (the default): where punching cannot work, both sides end up on the
    server's relay, under the session of the rendezvous they shared; arrays and an
    allreduce (a Communicator pairing the same way) cross it intact."""
    with natlab.NatLab(random_fully=symmetric) as lab, lab_server(lab) as port:
        a, b = run_pair(lab, port, "v2")
    for side in (a, b):
        assert side["ok"] and side["comm_ok"], side
        assert side["path"] == "relay", side
        assert side["peer"][0] == lab.server_ip, side  # the socket's far end is the relay


def test_symmetric_nats_fail_fast_with_punch_failed_when_relay_is_never(lab_available) -> None:
    with natlab.NatLab(random_fully=True) as lab, lab_server(lab) as port:
        a, b = run_pair(lab, port, "v2", relay="never")
    for side in (a, b):
        assert side["ok"] is False and side["error"] == "PunchFailed", side
        assert "symmetric" in side["text"]
        # "fail fast": within the punch window (plus the wait for the other side to start),
        # far below pair()'s own 30 s deadline
        assert side["elapsed_s"] < PUNCH_WINDOW + 2.0, side


# One side of the liveness test: pair with short keepalive settings, then either wait in
# recv() for data that never comes ("waiter") or just stay up until stdin closes.
LIVENESS_PEER = """
import json, sys, time
from fmi_client import pair
host, port, name, role = sys.argv[1:5]
sock = pair(name, host, int(port), timeout=30, keepalive_idle=1, keepalive_interval=1,
            keepalive_count=2)
print(json.dumps({"paired": True, "path": sock.link.path, "peer": sock.getpeername()}), flush=True)
if role == "waiter":
    started = time.monotonic()
    try:
        data = sock.recv(1)
        report = {"error": None, "data": data.hex()}
    except OSError as exc:
        report = {"error": type(exc).__name__, "errno": exc.errno, "text": str(exc)}
    report["elapsed_s"] = time.monotonic() - started
    print(json.dumps(report), flush=True)
else:
    sys.stdin.read()
"""


def read_json_line(proc: subprocess.Popen, deadline: float, what: str) -> dict:
    """The next JSON line ``proc`` prints, or AssertionError at the deadline."""
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
    if not ready:
        raise AssertionError(f"{what}: no output within the deadline")
    line = proc.stdout.readline()
    if not line.startswith("{"):
        raise AssertionError(f"{what}: printed {line!r}; stderr: {proc.stderr.read()[-1500:]}")
    return json.loads(line)


def test_peer_whose_link_is_cut_is_detected_by_keepalive(lab_available) -> None:
    """host_b's link goes down while host_a waits in recv(): keepalive ends the wait.

    Without keepalive nothing would ever arrive (no FIN, no RST) and recv() would block
    forever; with probes every second and 2 allowed misses it fails within seconds.
    """
    name = f"natlab-liveness-{os.getpid()}"
    procs: list[subprocess.Popen] = []
    with natlab.NatLab() as lab, lab_server(lab) as port:
        try:
            for host, role in ((lab.host_a, "waiter"), (lab.host_b, "vanisher")):
                procs.append(
                    subprocess.Popen(
                        [
                            *lab.exec_prefix(host),
                            sys.executable,
                            "-c",
                            LIVENESS_PEER,
                            lab.server_ip,
                            str(port),
                            name,
                            role,
                        ],
                        cwd=REPO,
                        env=python_env(),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            deadline = time.monotonic() + 40
            for proc, role in zip(procs, ("waiter", "vanisher"), strict=True):
                paired = read_json_line(proc, deadline, role)
                assert paired["paired"] and paired["path"] == "direct", paired
            subprocess.run(
                [*lab.exec_prefix(lab.host_b), "ip", "link", "set", "eth0", "down"],
                check=True,
                timeout=30,
            )
            report = read_json_line(procs[0], time.monotonic() + 30, "waiter after the cut")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    stream.close()
    assert report["error"] is not None, report  # an OSError, which Channel turns into PeerLost
    assert report["errno"] in (errno.ETIMEDOUT, errno.EHOSTUNREACH), report
    assert report["elapsed_s"] < 15, report  # keepalive: about 1 s idle + 2 probes 1 s apart


PROBE_SYN = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], 47000), timeout=1.5).close()
    print("open")
except ConnectionRefusedError:
    print("reset")
except OSError:
    print("silent")
"""


@pytest.mark.parametrize("mode", ["drop", "reset"])
def test_lab_routers_answer_unsolicited_syns_as_configured(mode):
    """The lab is as unfriendly as it claims: a SYN from outside to a router's own public
    address is dropped silently ("drop") or answered with a reset ("reset")."""
    require(natlab.available(), "root, ip, iptables and network namespaces (NAT lab)")
    with natlab.NatLab(unsolicited=mode) as lab:
        for router_ip in (lab.router_a_public, lab.router_b_public):
            out = subprocess.run(
                [*lab.exec_prefix(lab.public), sys.executable, "-c", PROBE_SYN, router_ip],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.stdout.strip() == ("silent" if mode == "drop" else "reset"), out


def run_punch_peers(
    lab: natlab.NatLab, port: int, runs: int, unstall: list[str] | None = None
) -> list[dict]:
    """tests.client.punch_peer on host_a and host_b, pairing ``runs`` times."""
    name = f"punch-{os.getpid()}-{time.monotonic_ns()}"
    hosts = [lab.host_a, lab.host_b]
    results = run_ranks(
        lambda side: [
            "-m",
            "tests.client.punch_peer",
            lab.server_ip,
            str(port),
            name,
            str(runs),
            *(unstall if unstall and side == 0 else []),
        ],
        2,
        timeout=400,
        prefix_for=lambda side: lab.exec_prefix(hosts[side]),
    )
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    return [r.json() for r in results]


@pytest.mark.parametrize(
    ("unsolicited", "runs"),
    [(("reset", "reset"), 100), (("reset", "drop"), 30), (("drop", "reset"), 30), ("drop", 30)],
)
def test_pairings_through_port_preserving_nats_never_fail(
    lab_available, unsolicited, runs: int
) -> None:
    """Whatever the routers do with an unsolicited SYN (reset it, possibly on both sides,
    or drop it), every pairing gives a direct, checked link that carries data."""
    with natlab.NatLab(unsolicited=unsolicited) as lab, lab_server(lab) as port:
        a, b = run_punch_peers(lab, port, runs)
    for side in (a, b):
        failed = [run for run in side["runs"] if run[0] != "ok"]
        assert not failed, failed[:3]
        assert len(side["runs"]) == runs
        for _outcome, _elapsed, link in side["runs"]:
            assert link["path"] == "direct" and link["verified_bytes"] == 65536, link
            assert link["stalls"] == 0, link


STALL_RULE = [
    "FORWARD",
    "-p",
    "tcp",
    "!",
    "--sport",
    "10000",
    "!",
    "--dport",
    "10000",
    "-m",
    "connbytes",
    "--connbytes",
    "20000:",
    "--connbytes-dir",
    "both",
    "--connbytes-mode",
    "bytes",
    "-j",
    "DROP",
]


def test_a_link_that_stalls_is_detected_and_re_paired(lab_available) -> None:
    """router_a drops every punched flow's packets after 20000 bytes (the rendezvous port
    excepted), like the AWS stalls FMI's users saw after 16-64 KB; host_a lifts the rule
    when pair() reports the first failed link check. Both sides notice the stall in the
    link check, re-pair under ``name~1`` and get a link that carries data."""
    with natlab.NatLab() as lab, lab_server(lab) as port:
        router = lab.exec_prefix(lab.router_a)
        subprocess.run([*router, "iptables", "-I", *STALL_RULE], check=True, timeout=30)
        a, b = run_punch_peers(lab, port, 1, unstall=[*router, "iptables", "-D", *STALL_RULE])
    assert a["unstalled"] and "link check failed" in a["unstalled"][0], a
    for side in (a, b):
        outcome, _elapsed, link = side["runs"][0]
        assert outcome == "ok", side
        assert link["stalls"] >= 1 and link["pairings"] >= 2, link
        assert "stalled" in link["problems"][0], link
        assert link["name"].endswith(f"~{link['pairings'] - 1}"), link

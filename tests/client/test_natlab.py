"""Through real NATs: two network namespaces behind two masquerading routers.

Port-preserving NATs (plain MASQUERADE) let the punch through and numpy arrays flow;
symmetric NATs (MASQUERADE --random-fully) make pair() give up fast with PunchFailed
naming the symmetric NAT. Needs root (CI runs as root and must not skip these).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests import natlab
from tests.client.ranks import REPO, python_env, run_ranks
from tests.facilities import require

pytestmark = pytest.mark.netns


@contextmanager
def lab_server(lab: natlab.NatLab) -> Iterator[int]:
    """The project's server in the lab's public namespace; yields its port."""
    port = 10000
    proc = subprocess.Popen(
        [
            *lab.exec_prefix(lab.public),
            sys.executable,
            "-m",
            "rendezvous",
            "serve",
            "--host",
            lab.server_ip,
            "--port",
            str(port),
            "--no-http",
        ],
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        probe = [
            *lab.exec_prefix(lab.public),
            sys.executable,
            "-c",
            f"import socket; socket.create_connection(('{lab.server_ip}', {port}), 1)",
        ]
        while subprocess.run(probe, capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lab server did not start: {proc.stderr.read()!r}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def run_pair(lab: natlab.NatLab, port: int, protocol: str) -> list[dict]:
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
        # each side sees the other's router, never its private address
        assert a["peer"][0] == lab.router_b_public and b["peer"][0] == lab.router_a_public
        assert a["local"][0] == lab.host_a_ip and b["local"][0] == lab.host_b_ip
    assert not set(lab.namespaces) & set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )


def test_symmetric_nats_fail_fast_with_punch_failed(lab_available) -> None:
    with natlab.NatLab(random_fully=True) as lab, lab_server(lab) as port:
        a, b = run_pair(lab, port, "v2")
    for side in (a, b):
        assert side["ok"] is False and side["error"] == "PunchFailed", side
        assert "symmetric" in side["text"]

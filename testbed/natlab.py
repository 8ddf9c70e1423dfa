"""A NAT lab built from Linux network namespaces: two hosts behind two NAT routers.

::

    host_a (10.<n>.1.2) ── router_a ──┐                  ┌── router_b ── host_b (10.<n>.2.2)
               10.<n>.1.1   198.18.<n>.2 ── public ── 198.18.<n>.3   10.<n>.2.1
                                           198.18.<n>.1 (server)

Each router masquerades its LAN behind its public address and silently drops unsolicited
inbound traffic (FORWARD and INPUT accept only ESTABLISHED,RELATED from the public side),
like a home router or a cloud NAT gateway; ``unsolicited="reset"`` makes a router answer
them with a reset instead, as a Linux router with no INPUT rules does.
``random_fully=True`` makes a NAT symmetric (``MASQUERADE --random-fully``: a new port
per connection). ``no_inbound=True`` makes a host accept no inbound connection at all,
punched or not, as some platforms' functions do (see ``NatLab._refuse_inbound``). Each
takes one value for both sides or a pair (side a, side b). ``stranger_ip`` is a second
public address (not the server's) for probes.
Names carry the pid and a counter so concurrent runs do not collide; ``close()``
deletes every namespace even after failures. Needs root, ``ip`` (iproute2) and
``iptables``. ``lab_server`` runs the project's server on the public side. Tests and
benchmarks share it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, TypeVar

from testbed.procs import REPO, python_env, stop

_counter = itertools.count()

Unsolicited = Literal["drop", "reset"]
"""What a router does with an unsolicited inbound SYN to its public address."""

T = TypeVar("T")


def _per_router(value: T | tuple[T, T]) -> tuple[T, T]:
    """One setting for both routers, or (router_a's, router_b's)."""
    if isinstance(value, tuple):
        return value
    return (value, value)


def available() -> bool:
    """Whether this machine can build the lab (root, ip, iptables, namespaces)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        return False
    probe = f"nlprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return made


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"NAT lab: {' '.join(argv)} failed: {result.stderr.strip()}")


class NatLab:
    """The namespaces ``public``, ``router_a``, ``router_b``, ``host_a``, ``host_b``."""

    def __init__(
        self,
        *,
        random_fully: bool | tuple[bool, bool] = False,
        unsolicited: Unsolicited | tuple[Unsolicited, Unsolicited] = "drop",
        no_inbound: bool | tuple[bool, bool] = False,
    ) -> None:
        index = next(_counter)
        self.tag = f"{os.getpid()}x{index}"
        subnet = (os.getpid() * 7 + index) % 250 + 1  # keeps concurrent labs' logs apart
        self.random_fully = _per_router(random_fully)
        self.unsolicited = _per_router(unsolicited)
        self.no_inbound = _per_router(no_inbound)
        for mode in self.unsolicited:
            if mode not in ("drop", "reset"):
                raise ValueError(f"unsolicited must be 'drop' or 'reset', got {mode!r}")
        self.public = f"nlpub{self.tag}"
        self.router_a = f"nlra{self.tag}"
        self.router_b = f"nlrb{self.tag}"
        self.host_a = f"nlha{self.tag}"
        self.host_b = f"nlhb{self.tag}"
        self.server_ip = f"198.18.{subnet}.1"
        self.stranger_ip = f"198.18.{subnet}.9"
        self.router_a_public = f"198.18.{subnet}.2"
        self.router_b_public = f"198.18.{subnet}.3"
        self.host_a_ip = f"10.{subnet}.1.2"
        self.host_b_ip = f"10.{subnet}.2.2"
        self._subnet = subnet
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def namespaces(self) -> list[str]:
        return [self.public, self.router_a, self.router_b, self.host_a, self.host_b]

    def _ns(self, ns: str, *argv: str) -> None:
        _run(["ip", "netns", "exec", ns, *argv])

    def _link(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        _run(
            [
                "ip",
                "link",
                "add",
                if1,
                "netns",
                ns1,
                "type",
                "veth",
                "peer",
                "name",
                if2,
                "netns",
                ns2,
            ]
        )

    def _accept_established(self, router: str, chain: str) -> None:
        """Let in from the public side only what answers the LAN's own traffic."""
        self._ns(router, "iptables", "-A", chain, "-i", "wan", "-m", "conntrack",
                 "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")  # fmt: skip

    def _build(self) -> None:
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            self._ns(ns, "ip", "link", "set", "lo", "up")
        n = self._subnet
        self._ns(self.public, "ip", "link", "add", "br0", "type", "bridge")
        self._ns(self.public, "ip", "addr", "add", f"{self.server_ip}/24", "dev", "br0")
        self._ns(self.public, "ip", "addr", "add", f"{self.stranger_ip}/24", "dev", "br0")
        self._ns(self.public, "ip", "link", "set", "br0", "up")
        for router, host, side, router_public, host_ip in (
            (self.router_a, self.host_a, 1, self.router_a_public, self.host_a_ip),
            (self.router_b, self.host_b, 2, self.router_b_public, self.host_b_ip),
        ):
            random_fully, unsolicited = self.random_fully[side - 1], self.unsolicited[side - 1]
            if self.no_inbound[side - 1]:
                self._refuse_inbound(host)
            self._link(router, "wan", self.public, f"p{side}")
            self._ns(self.public, "ip", "link", "set", f"p{side}", "master", "br0")
            self._ns(self.public, "ip", "link", "set", f"p{side}", "up")
            self._ns(router, "ip", "addr", "add", f"{router_public}/24", "dev", "wan")
            self._ns(router, "ip", "link", "set", "wan", "up")
            self._link(router, "lan", host, "eth0")
            self._ns(router, "ip", "addr", "add", f"10.{n}.{side}.1/24", "dev", "lan")
            self._ns(router, "ip", "link", "set", "lan", "up")
            self._ns(host, "ip", "addr", "add", f"{host_ip}/24", "dev", "eth0")
            self._ns(host, "ip", "link", "set", "eth0", "up")
            self._ns(host, "ip", "route", "add", "default", "via", f"10.{n}.{side}.1")
            self._ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            masquerade = [
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan",
                "-j",
                "MASQUERADE",
            ]
            if random_fully:
                masquerade.append("--random-fully")
            self._ns(router, *masquerade)
            self._ns(router, "iptables", "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT")
            self._accept_established(router, "FORWARD")
            self._ns(router, "iptables", "-P", "FORWARD", "DROP")
            if unsolicited == "reset":
                # Nothing guards the router's own ports: its kernel answers an unsolicited
                # SYN with a reset, which may also close the conntrack entry the sender's
                # own NAT had just opened (what a plain Linux router does).
                continue
            # "drop": unsolicited packets to the router's own public address are dropped
            # silently, like a home router or a cloud NAT gateway
            self._accept_established(router, "INPUT")
            self._ns(router, "iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP")

    def _refuse_inbound(self, host: str) -> None:
        """``host`` accepts no inbound TCP connection: its INPUT drops every segment with
        SYN set (a SYN or a SYN-ACK) that does not come from the server. Every way TCP
        opens needs one: passive and simultaneous open an inbound SYN, active open an
        inbound SYN-ACK; so no punch completes, whichever side's SYN gets through first
        (the peer, in SYN-RECEIVED, never gets our ACK either). The server is exempt so
        the host still reaches the rendezvous and the relay (its outbound connections
        elsewhere fail too: enough for these tests)."""
        self._ns(host, "iptables", "-A", "INPUT", "-p", "tcp", "!", "-s", self.server_ip,
                 "--tcp-flags", "SYN", "SYN", "-j", "DROP")  # fmt: skip

    def exec_prefix(self, ns: str) -> list[str]:
        """The argv prefix that runs a command inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]

    def close(self) -> None:
        """Delete every namespace this lab made (and with them its links and rules)."""
        while self._made:
            ns = self._made.pop()
            with contextlib.suppress(Exception):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def __enter__(self) -> NatLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def lab_server(lab: NatLab, extra_args: Sequence[str] = ()) -> Iterator[int]:
    """The project's server in the lab's public namespace; yields its port.

    ``extra_args`` go to ``rendezvous serve`` (e.g. ``--no-relay``); the NAT discovery
    port is the default 10002 unless they say otherwise. Its log goes to a temporary file,
    not a pipe: nobody reads a pipe while the lab runs, and a server whose log pipe is
    full blocks (after some hundred pairings)."""
    port = 10000
    with tempfile.TemporaryFile() as log_file:
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
                *extra_args,
            ],
            cwd=REPO,
            env=python_env(),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
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
                    log_file.seek(0)
                    raise RuntimeError(f"lab server did not start: {log_file.read()[-2000:]!r}")
                time.sleep(0.1)
            yield port
        finally:
            stop(proc)

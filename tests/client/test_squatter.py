"""A stranger who takes a rank's pairing name through the real rendezvous server gets no
user byte, is refused, and the ranks still pair with each other (pair_securely)."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fmi_client import PeerNeverArrived, pair
from fmi_client import fallback as fallback_module
from fmi_client.autherrors import PeerAuthenticationFailed
from fmi_client.securelink import pair_securely
from rendezvous.embedded import BackgroundServer
from tcpunch import V2_RESPONSE_SIZE, NatClass, V2Request, hint_flags

SECRET = "job-secret-0123456789abcdef"
MARKER = b"USER-DATA-4c1d"


def recv_all(sock: socket.socket) -> bytes:
    """What arrives until the peer closes (or resets: it drops us with our bytes unread)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize("encrypt", [True, False])
def test_squatter_costs_a_retry_not_the_job(server, encrypt):
    name = f"squat{os.getpid()}_{encrypt}_0_1"
    connect = lambda left: pair(name, server.host, server.port, timeout=left)  # noqa: E731
    rank0_refused = threading.Event()
    refusals: list[PeerAuthenticationFailed] = []

    def on_refused(exc: PeerAuthenticationFailed) -> None:
        refusals.append(exc)
        rank0_refused.set()

    def stranger() -> bytes:
        sock = pair(name, server.host, server.port, timeout=20)
        with sock:
            sock.sendall(b"\x01\x01" + bytes(36))  # looks like a HELLO, proves nothing
            return recv_all(sock)

    def rank(me: int) -> bytes:
        if me == 1:
            assert rank0_refused.wait(20), "rank 0 never met the stranger"
        conn = pair_securely(
            connect,
            secret=SECRET,
            pairing=name,
            my_rank=me,
            peer_rank=1 - me,
            encrypt=encrypt,
            deadline=time.monotonic() + 30,
            on_refused=on_refused if me == 0 else None,
        )
        with conn:
            conn.sendall(MARKER + bytes([me]))
            got = b""
            while len(got) < len(MARKER) + 1:
                got += conn.recv(64)
            return got

    with ThreadPoolExecutor(3) as pool:
        squatting = pool.submit(stranger)
        time.sleep(0.2)  # whoever registers first, rank 0 and the stranger pair up
        rank0, rank1 = pool.submit(rank, 0), pool.submit(rank, 1)
        assert rank0.result(timeout=60) == MARKER + b"\x01"
        assert rank1.result(timeout=60) == MARKER + b"\x00"
        seen_by_stranger = squatting.result(timeout=60)
    assert MARKER not in seen_by_stranger
    assert len(refusals) == 1 and refusals[0].name == name
    assert SECRET not in str(refusals[0])


def test_deadline_after_a_refusal_names_the_pairing(server):
    """Only a stranger ever comes: the named error, by the deadline, not PeerNeverArrived."""
    name = f"alone{os.getpid()}_0_1"

    def stranger() -> None:
        with pair(name, server.host, server.port, timeout=20) as sock:
            recv_all(sock)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(stranger)
        started = time.monotonic()
        with pytest.raises(PeerAuthenticationFailed) as info:
            pair_securely(
                lambda left: pair(name, server.host, server.port, timeout=left),
                secret=SECRET,
                pairing=name,
                my_rank=0,
                peer_rank=1,
                encrypt=False,
                deadline=time.monotonic() + 3,
                handshake_timeout=1,
            )
    assert time.monotonic() - started < 10
    assert info.value.name == name and name in str(info.value)
    assert isinstance(info.value.__cause__, PeerNeverArrived)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("declares", ["no-inbound", None])
def test_a_stranger_who_pairs_and_vanishes_costs_a_retry(monkeypatch, declares):
    """A stranger takes the name, then neither punches nor comes to the relay (declaring
    no-inbound sends rank 0 straight there; declaring nothing, after the punch): rank 0
    gives the relay RELAY_MEET, pairs again under the name, and meets rank 1 there."""
    monkeypatch.setattr(fallback_module, "RELAY_MEET", 1.0)
    with BackgroundServer(discovery_port=0, http_port=None) as srv:
        name = f"vanish{os.getpid()}_{declares}_0_1"
        stranger_paired = threading.Event()

        def stranger() -> None:
            flags = hint_flags(NatClass.NO_INBOUND) if declares else 0
            with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
                sock.sendall(V2Request(name, flags=flags).encode())
                reply = b""
                while len(reply) < 2 * V2_RESPONSE_SIZE:  # WAITING, then PAIRED
                    reply += sock.recv(256)
            stranger_paired.set()  # and gone

        def rank(me: int) -> bytes:
            if me == 1:
                assert stranger_paired.wait(20), "rank 0 never met the stranger"
            conn = pair_securely(
                lambda left: pair(
                    name,
                    "127.0.0.1",
                    srv.port,
                    timeout=left,
                    discovery_port=srv.server.discovery_port,
                ),
                secret=SECRET,
                pairing=name,
                my_rank=me,
                peer_rank=1 - me,
                deadline=time.monotonic() + 20,
                encrypt=False,
            )
            with conn:
                conn.sendall(MARKER + bytes([me]))
                got = b""
                while len(got) < len(MARKER) + 1:
                    got += conn.recv(64)
                return got

        with ThreadPoolExecutor(3) as pool:
            squatting = pool.submit(stranger)
            time.sleep(0.2)  # the stranger waits first: rank 0 pairs with it
            rank0, rank1 = pool.submit(rank, 0), pool.submit(rank, 1)
            assert rank0.result(timeout=60) == MARKER + b"\x01"
            assert rank1.result(timeout=60) == MARKER + b"\x00"
            squatting.result(timeout=5)

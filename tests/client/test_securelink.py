"""Securing real loopback TCP links: success, wrong secret, replay, strangers, relays,
deadlines, a missing ``cryptography``, and no plaintext on the wire (tcpdump)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fmi_client.autherrors import EncryptionUnavailable, PeerAuthenticationFailed
from fmi_client.errors import FmiClientError
from fmi_client.handshake import PLAIN_BINDING, Handshake, LinkSecret
from fmi_client.securelink import INSTALL_HINT, _context, _Identity, secure, tls_role
from tests.facilities import require

SECRET = "job-secret-0123456789abcdef"
OTHER = "not-the-job-secret-fedcba987654"
PAIRING = "job3_5"
MARKER = b"PLAINTEXT-MARKER-7f3a9c"


@contextmanager
def tcp_link() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two ends of a real loopback TCP connection; both closed afterwards."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=5)
        b, _ = listener.accept()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def both(left: Callable[[], Any], right: Callable[[], Any]) -> tuple[Any, Any]:
    """Run two sides concurrently; each result is a value or the exception it raised."""

    def capture(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # the test inspects it
            return exc

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(capture, left), pool.submit(capture, right)
        return first.result(timeout=30), second.result(timeout=30)


def securer(sock: socket.socket, me: int, peer: int, secret: str = SECRET, **kw: Any):
    kw.setdefault("deadline", time.monotonic() + 10)
    return lambda: secure(sock, secret=secret, pairing=PAIRING, my_rank=me, peer_rank=peer, **kw)


def recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("encrypt", [True, False])
def test_secured_link_carries_data_both_ways(encrypt):
    with tcp_link() as (a, b):
        a.settimeout(7.0)
        left, right = both(securer(a, 3, 5, encrypt=encrypt), securer(b, 5, 3, encrypt=encrypt))
        assert isinstance(left, socket.socket) and isinstance(right, socket.socket)
        assert isinstance(left, ssl.SSLSocket) is encrypt
        if encrypt:
            assert left.version() == right.version() == "TLSv1.3"
            assert left.server_side and not right.server_side  # lower rank is the TLS server
        assert left.gettimeout() == 7.0  # the caller's timeout is back
        left.sendall(b"x" * 100_000)
        right.sendall(b"pong")
        got = b""
        while len(got) < 100_000:
            got += right.recv(65536)
        assert got == b"x" * 100_000 and left.recv(4) == b"pong"
        left.close()
        right.close()


def test_roles():
    assert tls_role(3, 5) == "server" and tls_role(5, 3) == "client"


@pytest.mark.parametrize("encrypt", [True, False])
def test_wrong_secret_is_refused_on_both_sides(encrypt):
    with tcp_link() as (a, b):
        left, right = both(
            securer(a, 3, 5, encrypt=encrypt), securer(b, 5, 3, OTHER, encrypt=encrypt)
        )
    for error, peer in ((left, 5), (right, 3)):
        assert isinstance(error, PeerAuthenticationFailed) and isinstance(error, FmiClientError)
        assert error.name == PAIRING and error.reason == "bad_proof" and error.rank == peer
        assert PAIRING in str(error)
        for secret in (SECRET, OTHER):
            assert secret not in str(error) and secret not in repr(error)
    assert a.fileno() == -1 and b.fileno() == -1  # secure() closed them


def test_replayed_handshake_is_refused_and_gets_no_user_byte():
    """Rank 3's messages of an earlier (genuine) session, replayed to rank 5."""
    earlier_3 = Handshake(LinkSecret(SECRET), PAIRING, 3, 5, PLAIN_BINDING)
    earlier_5 = Handshake(LinkSecret(SECRET), PAIRING, 5, 3, PLAIN_BINDING)
    recorded = earlier_3.start()
    hello_5 = earlier_5.start()
    recorded += earlier_3.receive_data(hello_5)
    earlier_3.receive_data(earlier_5.receive_data(recorded))
    assert earlier_3.state.value == earlier_5.state.value == "done"

    with tcp_link() as (attacker, victim):

        def victim_side() -> socket.socket:
            conn = securer(victim, 5, 3, encrypt=False)()
            conn.sendall(MARKER)  # reached only if the replay were accepted
            return conn

        def attacker_side() -> bytes:
            attacker.sendall(recorded)
            return recv_all(attacker)

        error, received = both(victim_side, attacker_side)
    assert isinstance(error, PeerAuthenticationFailed) and error.reason == "bad_proof"
    assert len(received) == 38 + 34 and MARKER not in received  # the handshake, then EOF


@pytest.mark.parametrize("encrypt", [True, False])
def test_stranger_without_the_secret_never_receives_a_user_byte(encrypt):
    """A squatter runs the real protocol with a guessed secret; the victim sends user data
    right after secure() returns, so any byte of it reaching the stranger is a failure."""
    with tcp_link() as (victim, stranger):

        def victim_side() -> None:
            conn = securer(victim, 3, 5, encrypt=encrypt)()
            conn.sendall(MARKER)

        def stranger_side() -> bytes:
            # the stranger's own secure() fails too; read what it got before the close
            sock = stranger
            if encrypt:
                sock = _context("client", None).wrap_socket(stranger)
            guess = Handshake(LinkSecret(OTHER), PAIRING, 5, 3, b"guess")
            sock.sendall(guess.start())
            got = b""
            while len(got) < 38 and (chunk := sock.recv(38 - len(got))):
                got += chunk
            sock.sendall(guess.receive_data(got))  # a proof made with the wrong secret
            got += recv_all(sock)
            sock.close()
            return got

        error, received = both(victim_side, stranger_side)
    assert isinstance(error, PeerAuthenticationFailed) and error.reason == "bad_proof"
    assert MARKER not in received and len(received) <= 38 + 34


def test_relay_splicing_two_tls_sessions_is_refused():
    """A man in the middle terminates TLS towards each rank and forwards the handshake
    bytes verbatim: the TLS bindings differ, so both proofs fail."""
    with tcp_link() as (rank3, relay_a), tcp_link() as (relay_b, rank5):

        def relay() -> None:
            to_3 = _context("client", None).wrap_socket(relay_a)  # rank 3 is a TLS server
            to_5 = _context("server", _Identity()).wrap_socket(relay_b, server_side=True)
            stop = threading.Event()

            def pump(src: ssl.SSLSocket, dst: ssl.SSLSocket) -> None:
                try:
                    while not stop.is_set() and (chunk := src.recv(65536)):
                        dst.sendall(chunk)
                except OSError:
                    pass
                stop.set()

            thread = threading.Thread(target=pump, args=(to_5, to_3))
            thread.start()
            pump(to_3, to_5)
            thread.join(10)
            to_3.close()
            to_5.close()

        with ThreadPoolExecutor(1) as pool:
            pumping = pool.submit(relay)
            left, right = both(securer(rank3, 3, 5), securer(rank5, 5, 3))
            pumping.result(timeout=20)
    assert isinstance(left, PeerAuthenticationFailed) and left.reason == "bad_proof"
    assert isinstance(right, PeerAuthenticationFailed) and right.reason == "bad_proof"


@pytest.mark.parametrize("encrypt", [True, False])
def test_silent_peer_fails_at_the_deadline(encrypt):
    with tcp_link() as (a, _silent):
        started = time.monotonic()
        with pytest.raises(PeerAuthenticationFailed) as info:
            securer(a, 3, 5, encrypt=encrypt, deadline=time.monotonic() + 0.5)()
        assert info.value.reason == "timeout" and a.fileno() == -1
        assert time.monotonic() - started < 5


def test_peer_that_hangs_up_is_refused():
    with tcp_link() as (a, b):
        b.close()
        with pytest.raises(PeerAuthenticationFailed) as info:
            securer(a, 5, 3, encrypt=False)()
        assert info.value.reason in ("peer_closed",) and a.fileno() == -1


def test_encryption_mismatch_is_refused_clearly():
    with tcp_link() as (a, b):
        left, right = both(securer(a, 5, 3, encrypt=True), securer(b, 3, 5, encrypt=False))
    assert isinstance(left, PeerAuthenticationFailed) and isinstance(
        right, PeerAuthenticationFailed
    )
    assert right.reason == "bad_version" and "encrypt=False" in str(right)


def test_without_cryptography_encryption_says_what_to_install(monkeypatch):
    """``cryptography`` made unimportable in this process, as in a layer without it."""
    monkeypatch.setitem(sys.modules, "cryptography.x509", None)
    with tcp_link() as (a, b):
        with pytest.raises(EncryptionUnavailable) as info:
            securer(a, 3, 5)()
        assert "pip install 'rendezvous[crypto]'" in str(info.value) == INSTALL_HINT
        assert a.fileno() == -1
    with tcp_link() as (a, b):  # authentication alone still works with the stdlib
        left, right = both(securer(a, 3, 5, encrypt=False), securer(b, 5, 3, encrypt=False))
        assert not isinstance(left, Exception) and not isinstance(right, Exception)
        left.close()
        right.close()


# -- no plaintext on the wire -----------------------------------------------------------


@contextmanager
def capture(port: int | str, pcap: Path) -> Iterator[None]:
    """tcpdump on loopback for one TCP port (or a filter expression), written to ``pcap``
    (stopped on exit)."""
    proc = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-w",
            str(pcap),
            f"tcp port {port}" if isinstance(port, int) else port,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "listening on lo, ..." once it captures
        assert "listening on" in line, line
        yield
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


def transfer_over_captured_link(encrypt: bool, pcap: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with capture(port, pcap):
            a = socket.create_connection(("127.0.0.1", port), timeout=5)
            b, _ = listener.accept()
            left, right = both(securer(a, 3, 5, encrypt=encrypt), securer(b, 5, 3, encrypt=encrypt))
            try:
                left.sendall(MARKER * 2000)
                expected, got = len(MARKER) * 2000, b""
                while len(got) < expected:
                    got += right.recv(65536)
                assert got == MARKER * 2000
            finally:
                left.close()
                right.close()


def test_encrypted_link_carries_no_plaintext(tmp_path):
    require(
        shutil.which("tcpdump") is not None and os.geteuid() == 0,
        "tcpdump run as root (apt-get install tcpdump)",
    )
    plain, encrypted = tmp_path / "plain.pcap", tmp_path / "encrypted.pcap"
    transfer_over_captured_link(False, plain)
    transfer_over_captured_link(True, encrypted)
    # the control proves the capture sees payloads; the encrypted capture is as large
    assert MARKER in plain.read_bytes()
    captured = encrypted.read_bytes()
    assert len(captured) > len(MARKER) * 2000
    assert MARKER not in captured and MARKER[:12] not in captured


STDLIB_ONLY = """
import socket, sys, threading, time
sys.modules["numpy"] = None          # a Lambda layer with neither numpy
sys.modules["cryptography"] = None   # nor cryptography
from fmi_client.autherrors import EncryptionUnavailable
from fmi_client.safecodec import SafeCodecError, decode, encode
from fmi_client.securelink import secure
value = {"a": [1, 2.5, "x", b"y", None, (True,)]}
assert decode(encode(value)) == value
try:
    decode(b"\\x0b\\x03<f8\\x01" + bytes(16))
except SafeCodecError as exc:
    assert "numpy is not installed" in str(exc)
a, b = socket.socketpair()
try:
    secure(a, secret="s" * 20, pairing="p", my_rank=0, peer_rank=1, deadline=time.monotonic() + 5)
except EncryptionUnavailable as exc:
    print("refused:", exc)
a, b = socket.socketpair()
out = {}
t = threading.Thread(target=lambda: out.update(b=secure(b, secret="s" * 20, pairing="p",
    my_rank=1, peer_rank=0, encrypt=False, deadline=time.monotonic() + 5)))
t.start()
left = secure(a, secret="s" * 20, pairing="p", my_rank=0, peer_rank=1, encrypt=False,
    deadline=time.monotonic() + 5)
t.join()
left.sendall(b"ok")
print("authenticated:", out["b"].recv(2).decode())
"""


def test_stdlib_only_process_authenticates_and_says_what_to_install():
    """Without numpy and cryptography (a bare Lambda layer): the safe codec and plain
    authentication work; encryption names the package to install."""
    result = subprocess.run(
        [sys.executable, "-c", STDLIB_ONLY], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "refused: " + INSTALL_HINT in result.stdout
    assert "authenticated: ok" in result.stdout

"""Communicators with and without a job secret, over a real rendezvous server: a stranger
on a pairing name gets no user byte and costs a retry, a stranger's pickle is never
loaded, a wrong secret fails by the deadline naming the pairing, collectives run over
encrypted links, fmi.json carries the secret, and the wire shows no plaintext."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fmi_client.compat as fmi
from fmi_client import (
    Communicator,
    EncryptionUnavailable,
    FmiClientError,
    PeerAuthenticationFailed,
    PickleRefused,
    pair,
)
from fmi_client.framing import FIXED_STRUCT, KIND_PICKLE, MAGIC
from tests.client.test_securelink import capture
from tests.client.threadranks import comm_for, run_ranks
from tests.facilities import require

SECRET = "job-secret-0123456789abcdef"
OTHER = "not-the-job-secret-fedcba987654"
MARKER = b"USER-BYTES-5e0b71c2"


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # reset: the victim dropped us with our bytes unread
        pass
    return data


class LeavesAMark:
    """Loading this pickle creates ``path``: the mark a stranger's code would leave."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def evil_frame(mark: Path) -> bytes:
    payload = pickle.dumps(LeavesAMark(mark))
    return FIXED_STRUCT.pack(MAGIC, KIND_PICKLE, 0, len(payload), 0, 0) + payload


def squat(server: Any, name: str, send: bytes) -> Callable[[], bytes]:
    """A stranger who registers ``name`` first, sends ``send`` and keeps what it gets."""

    def stranger() -> bytes:
        with pair(name, server.host, server.port, timeout=20) as sock:
            sock.sendall(send)
            return recv_all(sock)

    return stranger


@pytest.mark.parametrize("encrypt", [True, False])
def test_squatter_gets_no_user_byte_and_the_allreduce_completes(server, encrypt, caplog):
    name = f"sq{os.getpid()}{encrypt:d}"

    def rank(me: int) -> Any:
        if me == 1:
            time.sleep(0.5)  # rank 0 meets the stranger first
        with comm_for(server, name, me, 3, secret=SECRET, encrypt=encrypt) as comm:
            if me == 0:
                comm.send(MARKER, 1)
            elif me == 1:
                assert comm.recv(0) == MARKER
            total = comm.allreduce(np.arange(1000, dtype=np.float32) * (me + 1))
            return total, {type(ch.sock) for ch in comm._channels.values()}

    with ThreadPoolExecutor(1) as pool:
        stranger = pool.submit(squat(server, f"{name}#0-1", b"\x01\x01" + bytes(36) + MARKER))
        time.sleep(0.3)  # the stranger is registered first
        results = run_ranks(3, rank)
        seen = stranger.result(timeout=60)
    for total, kind in results:
        np.testing.assert_array_equal(total, np.arange(1000, dtype=np.float32) * 6)
        assert kind and all(issubclass(k, ssl.SSLSocket) == encrypt for k in kind)
    assert MARKER not in seen
    assert "refused a peer (dropped, pairing again): could not secure the link" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("secret", [None, SECRET])
def test_a_strangers_pickle_is_never_loaded(server, tmp_path, secret):
    name = f"pk{os.getpid()}{secret is None:d}"
    mark = tmp_path / "mark"
    with ThreadPoolExecutor(1) as pool:
        stranger = pool.submit(squat(server, f"{name}#0-1", evil_frame(mark)))
        time.sleep(0.3)
        victim = comm_for(server, name, 1, 2, secret=secret, encrypt=False)
        with victim:
            if secret is None:  # the stranger is its peer: refused, never unpickled
                with pytest.raises(PickleRefused) as info:
                    victim.recv(0)
                assert "allow_pickle=True" in str(info.value) and "secret" in str(info.value)
            else:  # the stranger fails the proof; the real rank 0 comes after

                def rank0() -> None:
                    time.sleep(1)
                    with comm_for(server, name, 0, 2, secret=secret, encrypt=False) as comm:
                        comm.send({"from": "rank 0"}, 1)

                real = pool.submit(rank0)
                assert victim.recv(0) == {"from": "rank 0"}
                real.result(timeout=60)
        stranger.result(timeout=60)
    assert not mark.exists()


def test_wrong_secret_fails_naming_the_pairing_by_the_deadline(server):
    name = f"ws{os.getpid()}"

    def rank(me: int) -> BaseException:
        comm = Communicator(
            me, 2, f"{server.host}:{server.port}", name, timeout=3, secret=(SECRET, OTHER)[me]
        )
        with comm, pytest.raises(PeerAuthenticationFailed) as info:
            comm.barrier()
        return info.value

    started = time.monotonic()
    errors = run_ranks(2, rank)
    assert time.monotonic() - started < 3 + 15  # the deadline, plus one handshake at most
    for error in errors:
        assert error.name == f"{name}#0-1" and f"{name}#0-1" in str(error)
        assert SECRET not in str(error) and OTHER not in str(error)


class Point:  # not plain data: pickled, so only over trusted links
    def __init__(self, x: int) -> None:
        self.x = x


def test_collectives_over_encrypted_links(server):
    name = f"coll{os.getpid()}"
    big = np.arange(1 << 20, dtype=np.float32)  # past SMALL_EXCHANGE: the non-blocking path

    def rank(me: int) -> tuple[Any, ...]:
        with comm_for(server, name, me, 4, secret=SECRET) as comm:
            total = comm.allreduce(big * (me + 1))
            settings = comm.bcast({"lr": 0.1, "layers": [3, 4]} if me == 0 else None)
            names = comm.gather(f"rank-{me}")
            point = comm.bcast(Point(7) if me == 0 else None)  # pickle: authenticated links
            with comm.Split(me % 2) as sub:  # sub-communicators keep the secret
                pair_sum = sub.allreduce(me)
                kinds = {type(ch.sock) for c in (comm, sub) for ch in c._channels.values()}
            return total, settings, names, point.x, kinds, pair_sum

    for me, (total, settings, names, x, kinds, pair_sum) in enumerate(run_ranks(4, rank)):
        assert pair_sum == (0 + 2 if me % 2 == 0 else 1 + 3)
        np.testing.assert_array_equal(total, big * 10)
        assert settings == {"lr": 0.1, "layers": [3, 4]} and x == 7
        assert names == (["rank-0", "rank-1", "rank-2", "rank-3"] if me == 0 else None)
        assert kinds == {ssl.SSLSocket}


def test_without_a_secret_plain_data_works_and_custom_objects_need_allow_pickle(server):
    name = f"plain{os.getpid()}"

    def rank(me: int) -> Any:
        with comm_for(server, name, me, 2) as comm:
            got = comm.bcast({"k": [1, 2.5, "x", None, (True, b"b")]})
            if me == 0:
                with pytest.raises(TypeError, match="allow_pickle=True"):
                    comm.send(Point(1), 1)
            comm.barrier()
        with comm_for(server, name + "p", me, 2, allow_pickle=True) as comm:
            return got, comm.bcast(Point(5) if me == 0 else None).x

    assert run_ranks(2, rank) == [({"k": [1, 2.5, "x", None, (True, b"b")]}, 5)] * 2


def test_fmi_json_secret_secures_compat(server, tmp_path, monkeypatch):
    monkeypatch.delenv("FMI_SECRET", raising=False)
    config = tmp_path / "fmi.json"
    direct = {"host": server.host, "port": server.port, "protocol": "v2", "secret": SECRET}
    config.write_text(json.dumps({"backends": {"Direct": direct}}))
    name = f"compat{os.getpid()}"

    def rank(me: int) -> Any:
        with fmi.Communicator(me, 2, config, name) as comm:
            total = comm.allreduce(me + 1, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.int))
            sock = comm.communicator._channels[1 - me].sock
            return total, isinstance(sock, ssl.SSLSocket)

    assert run_ranks(2, rank) == [(3, True), (3, True)]
    direct["secret"] = "short-" + "x"  # under 16 bytes
    config.write_text(json.dumps({"backends": {"Direct": direct}}))
    with pytest.raises(FmiClientError, match=r"backends\.Direct\.secret") as info:
        fmi.Communicator(0, 2, config, name)
    assert "short-x" not in str(info.value)


def test_secret_from_environment_and_missing_cryptography(server, monkeypatch):
    monkeypatch.setenv("FMI_SECRET", SECRET)
    comm = comm_for(server, "env", 0, 2, encrypt=False)
    assert comm._security.authenticated and SECRET not in repr(comm._security)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(comm._security)
    monkeypatch.setitem(sys.modules, "cryptography.x509", None)
    with pytest.raises(EncryptionUnavailable, match=r"pip install 'rendezvous\[crypto\]'"):
        comm_for(server, "env", 0, 2)
    monkeypatch.delenv("FMI_SECRET")
    assert not comm_for(server, "env", 0, 2)._security.authenticated  # no secret: no TLS


def run_pair_captured(server: Any, encrypt: bool, pcap: Path) -> None:
    name = f"wire{os.getpid()}{encrypt:d}"

    def rank(me: int) -> Any:
        with comm_for(server, name, me, 2, secret=SECRET, encrypt=encrypt) as comm:
            return comm.bcast(MARKER * 1000 if me == 0 else None)

    with capture_lo(server.port, pcap):
        assert run_ranks(2, rank) == [MARKER * 1000] * 2


def capture_lo(server_port: int, pcap: Path) -> Any:
    """Loopback capture of the punched links (every TCP port but the server's)."""
    return capture(f"tcp and not port {server_port}", pcap)


def test_encrypted_communicator_links_carry_no_plaintext(server, tmp_path):
    require(
        shutil.which("tcpdump") is not None and os.geteuid() == 0,
        "tcpdump run as root (apt-get install tcpdump)",
    )
    plain, encrypted = tmp_path / "plain.pcap", tmp_path / "encrypted.pcap"
    run_pair_captured(server, False, plain)
    run_pair_captured(server, True, encrypted)
    assert MARKER in plain.read_bytes()  # the control: the capture sees the links
    captured = encrypted.read_bytes()
    assert len(captured) > len(MARKER) * 1000
    assert MARKER not in captured and MARKER[:10] not in captured

"""pair(credential=), $RENDEZVOUS_CREDENTIAL, Communicator and compat against a real server
started with an auth secret (and one without): valid credentials pair, refused ones say so
without ever quoting the credential."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fmi_client.compat as fmi
from fmi_client import Communicator, FmiClientError, RendezvousRefused, pair
from rendezvous.embedded import BackgroundServer
from tcpunch.credential import CREDENTIAL_ENV, mint
from tests.client.test_compat import assert_fmi_semantics, run_fmi_workers, write_config
from tests.client.twosides import two_sides

SECRET = b"client-test-secret-0123456789"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, auth_secrets=(SECRET,)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_inherited_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)


def unique(stem: str) -> str:
    return f"{stem}{os.getpid()}-{time.monotonic_ns()}/"


def credential_for(prefix: str, *, secret: bytes = SECRET, ttl: int = 600, age: float = 0) -> str:
    return mint(secret, prefix, ttl, time.time() - age)


def assert_connected(sockets: list[object]) -> None:
    a, b = sockets
    assert isinstance(a, socket.socket) and isinstance(b, socket.socket)
    try:
        a.sendall(b"authenticated rendezvous")
        assert b.recv(64) == b"authenticated rendezvous"
    finally:
        a.close()
        b.close()


def test_pair_with_a_credential(auth_server: BackgroundServer) -> None:
    job = unique("job-")
    credential = credential_for(job)
    assert_connected(
        two_sides(
            lambda i: pair(
                job + "0-1", auth_server.host, auth_server.port, timeout=20, credential=credential
            )
        )
    )


def test_pair_takes_the_credential_from_the_environment(
    auth_server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unique("env-")
    monkeypatch.setenv(CREDENTIAL_ENV, credential_for(job))
    assert_connected(
        two_sides(lambda i: pair(job + "0-1", auth_server.host, auth_server.port, timeout=20))
    )


def test_pair_without_a_credential_is_refused_and_told_why(auth_server: BackgroundServer) -> None:
    with pytest.raises(RendezvousRefused, match="requires a credential") as info:
        pair(unique("none-") + "0-1", auth_server.host, auth_server.port, timeout=10)
    assert "RENDEZVOUS_CREDENTIAL" in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda job: credential_for(job, ttl=60, age=3600),  # expired an hour ago
        lambda job: credential_for(job, secret=b"not-the-servers-secret-0123"),  # forged
    ],
    ids=["expired", "forged"],
)
def test_a_refused_credential_is_named_but_never_quoted(
    auth_server: BackgroundServer, make: Callable[[str], str]
) -> None:
    job = unique("refused-")
    credential = make(job)
    started = time.monotonic()
    with pytest.raises(RendezvousRefused, match="refused the credential") as info:
        pair(job + "0-1", auth_server.host, auth_server.port, timeout=20, credential=credential)
    assert time.monotonic() - started < 10  # refused at once, not at the deadline
    text = str(info.value)
    assert "expired, forged" in text and "rendezvous credential --prefix" in text
    assert credential not in text and credential.rsplit(":", 1)[1] not in text
    assert credential not in repr(info.value)


def test_client_side_mistakes_fail_before_the_server_is_asked(
    auth_server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = unique("local-")
    credential = credential_for(job)
    rejected = dict(auth_server.server.metrics.rejected)
    with pytest.raises(ValueError, match="v1 cannot carry a credential") as info:
        pair(job + "0-1", auth_server.host, auth_server.port, protocol="v1", credential=credential)
    assert credential not in str(info.value)
    with pytest.raises(ValueError, match="not for pairing 'other/0-1'") as info:
        pair("other/0-1", auth_server.host, auth_server.port, credential=credential)
    assert credential.rsplit(":", 1)[1] not in str(info.value)
    with pytest.raises(ValueError, match="not a rendezvous credential") as info:
        pair(job + "0-1", auth_server.host, auth_server.port, credential="s3cr3t-bearer")
    assert "s3cr3t-bearer" not in str(info.value)
    monkeypatch.setenv(CREDENTIAL_ENV, credential)
    with pytest.raises(ValueError, match=r"\$RENDEZVOUS_CREDENTIAL is set"):
        pair(job + "0-1", auth_server.host, auth_server.port, protocol="v1")
    assert auth_server.server.metrics.rejected == rejected  # nothing reached the server


def test_a_server_without_auth_pairs_credentialed_clients(server: BackgroundServer) -> None:
    job = unique("open-")
    credential = credential_for(job)
    assert_connected(
        two_sides(
            lambda i: pair(job + "0-1", server.host, server.port, timeout=20, credential=credential)
        )
    )


def test_communicator_passes_the_credential(auth_server: BackgroundServer) -> None:
    job = unique("comm-")
    credential = credential_for(job)
    address = f"{auth_server.host}:{auth_server.port}"

    def rank(r: int) -> object:
        with Communicator(r, 2, address, job, timeout=20, credential=credential) as comm:
            assert credential not in repr(comm)
            return comm.allreduce(r + 1)

    assert two_sides(rank) == [3, 3]


def test_compat_takes_the_credential_from_fmi_json(
    auth_server: BackgroundServer, tmp_path: Path
) -> None:
    """FMI's worker, unchanged: its comm_name is 'fmi_pair', so names start 'fmi_pair#'."""
    credential = credential_for("fmi_pair#")
    config = write_config(
        tmp_path / "fmi.json",
        auth_server.host,
        auth_server.port,
        protocol="v2",
        credential=credential,
    )
    assert_fmi_semantics(run_fmi_workers(config, 3), 3)
    v1 = write_config(tmp_path / "v1.json", "127.0.0.1", 1, credential=credential)
    with pytest.raises(FmiClientError, match="credential needs protocol v2") as info:
        fmi.Communicator(0, 2, v1, "fmi_pair")
    assert credential not in str(info.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backends": {"Direct": {"host": "h", "credential": 5}}}))
    with pytest.raises(FmiClientError, match="credential must be a non-empty string"):
        fmi.Communicator(0, 2, bad, "fmi_pair")

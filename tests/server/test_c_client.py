"""The original TCPunch client's wire behaviour (a C client compiled here) pairs through
the server, with itself and with v2 clients."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rendezvous.embedded import BackgroundServer
from tcpunch import Status, decode_v2_response, encode_v2_request
from tcpunch.credential import mint
from tests.facilities import require

SOURCE = Path(__file__).with_name("tcpunch_client.c")
LINE = re.compile(
    r"local=(?P<local>\S+) own=(?P<own>\S+) peer=(?P<peer>\S+) closed=(?P<closed>[01])"
)


@pytest.fixture(scope="module")
def c_client(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    require(gcc is not None, "gcc (apt-get install gcc)")
    binary = tmp_path_factory.mktemp("cclient") / "tcpunch_client"
    subprocess.run(
        [gcc, "-O1", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)],
        check=True,
        timeout=60,
    )
    return binary


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(http_port=None) as running:
        yield running


def start(binary: Path, port: int, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(binary), "127.0.0.1", str(port), name, "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen) -> dict[str, str]:
    try:
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"C client failed ({proc.returncode}): {err}"
    match = LINE.search(out)
    assert match, out
    return match.groupdict()


def test_two_c_clients_pair(c_client, server):
    name = f"fmi_pair{os.getpid()}_1"
    first = start(c_client, server.port, name)
    try:
        deadline = time.monotonic() + 5
        while server.server.room.waiter(name.encode()) is None:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        second = start(c_client, server.port, name)
    except BaseException:
        first.kill()
        first.wait()
        raise
    a, b = result(first), result(second)
    assert a["own"] == a["local"] and b["own"] == b["local"]
    assert a["peer"] == b["local"] and b["peer"] == a["local"]
    assert a["closed"] == b["closed"] == "1"


def test_c_client_pairs_with_v2_client(c_client, server):
    name = f"fmi_pair{os.getpid()}_2"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as v2:
        v2.sendall(encode_v2_request(name))
        waiting = decode_v2_response(v2.recv(51, socket.MSG_WAITALL))
        assert waiting.status is Status.WAITING
        c = result(start(c_client, server.port, name))
        paired = decode_v2_response(v2.recv(51, socket.MSG_WAITALL))
    assert paired.status is Status.PAIRED
    assert c["peer"] == str(waiting.you) and str(paired.peer) == c["local"]


# -- a server with an auth secret: v1 (which cannot carry a credential) per --allow-v1 ----

AUTH_SECRET = b"c-client-auth-secret-0123456789"


@pytest.fixture(scope="module")
def auth_server():
    with BackgroundServer(
        http_port=None, auth_secrets=(AUTH_SECRET,), allow_v1=r"legacy_fmi\d+_\d+"
    ) as running:
        yield running


def test_c_client_outside_the_allow_v1_pattern_is_refused(c_client, auth_server):
    proc = start(c_client, auth_server.port, f"fmi_pair{os.getpid()}_3")
    try:
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3 and "own endpoint: got 0 bytes" in err  # closed at once
    assert auth_server.server.metrics.rejected["v1_not_allowed"] >= 1


def test_c_client_matching_the_pattern_pairs_with_a_credentialed_v2_client(c_client, auth_server):
    name = f"legacy_fmi{os.getpid()}_4"
    credential = mint(AUTH_SECRET, "legacy_fmi", 600, time.time())
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=5) as v2:
        v2.sendall(encode_v2_request(name, credential=credential))
        waiting = decode_v2_response(v2.recv(51, socket.MSG_WAITALL))
        assert waiting.status is Status.WAITING
        c = result(start(c_client, auth_server.port, name))
        paired = decode_v2_response(v2.recv(51, socket.MSG_WAITALL))
    assert paired.status is Status.PAIRED
    assert c["peer"] == str(waiting.you) and str(paired.peer) == c["local"]

"""``rendezvous serve`` that cannot listen says which address, which flag and what to do."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.server.serverproc import CMD, clean_env


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(RENDEZVOUS_LOG_LEVEL="ERROR"),
    )


@pytest.fixture
def taken() -> socket.socket:
    """A listening socket on 127.0.0.1; its port is in use while the test runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def test_rendezvous_port_in_use_names_address_and_flag(taken: socket.socket) -> None:
    port = taken.getsockname()[1]
    out = serve("--host", "127.0.0.1", "--port", str(port), "--no-http")
    assert out.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{port} (--port): address already in use; stop the "
        "other process or choose another --port"
    ) in out.stderr


def test_http_port_in_use_names_the_http_flag(taken: socket.socket) -> None:
    port = taken.getsockname()[1]
    out = serve("--host", "127.0.0.1", "--port", "0", "--http-port", str(port))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--http-port): address already in use" in (
        out.stderr
    )


def test_equal_port_and_http_port_are_refused_up_front() -> None:
    out = serve("--host", "127.0.0.1", "--port", "17043", "--http-port", "17043")
    assert out.returncode == 2
    assert "--port and --http-port are both 17043 on the same address" in out.stderr


def test_equal_ports_on_different_http_host_are_allowed_by_settings() -> None:
    from rendezvous.settings import Settings

    Settings(host="127.0.0.1", port=17043, http_host="127.0.0.2", http_port=17043)
    with pytest.raises(ValueError, match="both 17043"):
        Settings(host="0.0.0.0", port=17043, http_host="127.0.0.2", http_port=17043)


def test_unresolvable_host_is_named() -> None:
    out = serve("--host", "999.1.1.1", "--port", "0", "--no-http")
    assert out.returncode == 1
    assert "cannot listen on 999.1.1.1:0 (--host): '999.1.1.1' is not an IP address" in (out.stderr)
    assert "Traceback" not in out.stderr


def test_address_this_machine_lacks_is_named() -> None:
    out = serve("--host", "198.18.254.254", "--port", "0", "--no-http")
    assert out.returncode == 1
    assert "this machine has no address 198.18.254.254; check --host" in out.stderr


def test_listening_line_carries_the_effective_settings() -> None:
    from tests.server.serverproc import running

    env = clean_env(
        RENDEZVOUS_PEER_TIMEOUT="7.5",
        RENDEZVOUS_V1_PEER_TIMEOUT="123",
        RENDEZVOUS_REQUEST_TIMEOUT="2.5",
        RENDEZVOUS_MAX_CONNECTIONS="77",
        RENDEZVOUS_MAX_WAITING_PER_IP="9",
        RENDEZVOUS_NAME_PATTERN="job-.*",
        RENDEZVOUS_ALLOW_DELETE_PAIRS="1",
        RENDEZVOUS_LOOP="asyncio",
    )
    with running("--port", "0", "--no-http", env=env) as (proc, rec):
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    assert rec["peer_timeout"] == 7.5 and rec["v1_peer_timeout"] == 123
    assert rec["request_timeout"] == 2.5 and rec["token_grace"] == 7.5
    assert rec["max_connections"] == 77 and rec["max_waiting_per_ip"] == 9
    assert rec["name_pattern"] == "job-.*" and rec["allow_delete_pairs"] is True
    assert rec["loop_setting"] == "asyncio" and "asyncio" in rec["loop"]

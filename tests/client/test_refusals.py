"""Wrong input fails up front, and a server that refuses us is not blamed on reachability."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import fmi_client
from fmi_client import (
    Communicator,
    FmiClientError,
    PeerNeverArrived,
    RendezvousRefused,
    RendezvousUnreachable,
    pair,
)
from fmi_client.address import check_port, parse_rendezvous
from rendezvous.connection import WAITING
from rendezvous.embedded import BackgroundServer


def unique(what: str) -> str:
    return f"{what}-{os.getpid()}-{time.monotonic_ns()}"


# -- ports and "host:port" --------------------------------------------------------------


@pytest.mark.parametrize("port", [99999, 65536, 0, -1])
def test_pair_refuses_ports_out_of_range(port: int) -> None:
    with pytest.raises(ValueError, match=rf"port must be in 1\.\.65535, got {port}"):
        pair("x", "127.0.0.1", port, timeout=3)


@pytest.mark.parametrize("port", [1.5, True, None])
def test_pair_refuses_ports_that_are_not_ints(port: object) -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        pair("x", "127.0.0.1", port, timeout=3)  # type: ignore[arg-type]


def test_pair_takes_decimal_strings_as_ports_but_checks_them() -> None:
    assert check_port("10000") == 10000  # pair(name, *"host:port".split(":"))
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535, got 99999"):
        pair("x", "127.0.0.1", "99999", timeout=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port 'abc' is not a number"):
        pair("x", "127.0.0.1", "abc", timeout=3)  # type: ignore[arg-type]


def test_pair_refuses_an_empty_host() -> None:
    with pytest.raises(ValueError, match="host must not be empty"):
        pair("x", "", 10000, timeout=3)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("127.0.0.1:99999", "port must be in 1..65535, got 99999"),
        ("127.0.0.1:0", "port must be in 1..65535, got 0"),
        (":1", "no host before ':'"),
        ("127.0.0.1:", "no port after ':'"),
        ("127.0.0.1:abc", "port 'abc' is not a number"),
        ("", "empty"),
    ],
)
def test_communicator_refuses_bad_rendezvous_strings(text: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        Communicator(0, 2, text, "c")
    assert says in str(info.value)


def test_host_alone_means_the_documented_default_port() -> None:
    assert parse_rendezvous("127.0.0.1") == ("127.0.0.1", 10000)
    assert parse_rendezvous("example.org:7") == ("example.org", 7)
    assert "10000" in (Communicator.__doc__ or "")


def test_compat_config_with_a_bad_port_says_which_field(tmp_path) -> None:
    import fmi_client.compat as fmi

    config = tmp_path / "fmi.json"
    config.write_text('{"backends": {"Direct": {"host": "127.0.0.1", "port": 70000}}}')
    with pytest.raises(FmiClientError, match=r"backends\.Direct\.port must be in 1\.\.65535"):
        fmi.Communicator(0, 2, config, "c")


# -- ranks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "size", "says"),
    [
        ("1", 2, "rank must be an int, got str '1'"),
        (True, 2, "rank must be an int, got bool True"),
        (0.5, 2, "rank must be an int, got float 0.5"),
        (0, "2", "world_size must be an int, got str '2'"),
        (0, False, "world_size must be an int, got bool False"),
    ],
)
def test_communicator_refuses_ranks_that_are_not_ints(rank: object, size: object, says: str):
    with pytest.raises(TypeError) as info:
        Communicator(rank, size, "127.0.0.1:10000", "c")  # type: ignore[arg-type]
    assert str(info.value) == says


def test_numpy_integer_ranks_are_fine() -> None:
    np = pytest.importorskip("numpy")
    comm = Communicator(np.int64(1), np.int32(2), "127.0.0.1:10000", "c")
    assert comm.rank == 1 and type(comm.rank) is int and comm.size == 2
    assert comm.pairing_name(0, 1) == "c#0-1"


# -- refusals ---------------------------------------------------------------------------


def test_refused_is_exported() -> None:
    assert "RendezvousRefused" in fmi_client.__all__
    assert issubclass(RendezvousRefused, FmiClientError)
    assert not issubclass(RendezvousRefused, RendezvousUnreachable)


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_name_pattern_mismatch_is_refused_not_unreachable(protocol: str) -> None:
    with (
        BackgroundServer(http_port=None, name_pattern="ok.*") as srv,
        pytest.raises(RendezvousRefused) as info,
    ):
        pair(unique("nope"), srv.host, srv.port, timeout=3, protocol=protocol)
    assert "--name-pattern" in str(info.value) and "--max-connections" in str(info.value)


def _waiter(srv: BackgroundServer, name: str, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            pair(name, srv.host, srv.port, timeout=2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _waiting(srv: BackgroundServer) -> int:
    """Connections the server has read a request from and parked (not merely accepted)."""
    assert srv.server is not None
    return sum(conn.state is WAITING for conn in list(srv.server.connections))


def _until(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_per_ip_waiting_cap_is_refused() -> None:
    with BackgroundServer(http_port=None, max_waiting_per_ip=1) as srv:
        errors: list[BaseException] = []
        first = _waiter(srv, unique("first"), errors)
        try:
            _until(lambda: srv.server is not None and _waiting(srv) == 1)
            with pytest.raises(RendezvousRefused) as info:
                pair(unique("second"), srv.host, srv.port, timeout=2)
        finally:
            first.join(timeout=10)
    assert not first.is_alive()
    assert [type(e) for e in errors] == [PeerNeverArrived]
    assert "--max-waiting-per-ip" in str(info.value)


def test_full_server_is_refused() -> None:
    with BackgroundServer(http_port=None, max_connections=2) as srv:
        errors: list[BaseException] = []
        waiters = [_waiter(srv, unique(f"w{i}"), errors) for i in range(2)]
        try:
            _until(lambda: srv.server is not None and _waiting(srv) == 2)
            with pytest.raises(RendezvousRefused) as info:
                pair(unique("third"), srv.host, srv.port, timeout=2)
        finally:
            for thread in waiters:
                thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in waiters)
    assert "--max-connections" in str(info.value)


def test_the_http_port_is_named_as_such() -> None:
    with BackgroundServer(http_port=0) as srv:
        assert srv.http_port
        with pytest.raises(RendezvousUnreachable) as info:
            pair(unique("http"), srv.host, srv.http_port, timeout=3)
    assert "it is the server's HTTP port (/health, /metrics), not the rendezvous port" in str(
        info.value
    )


def test_v1_names_with_control_characters_are_refused_before_sending() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with pytest.raises(ValueError, match="control characters"):
            pair("bad\nname", "127.0.0.1", listener.getsockname()[1], timeout=2, protocol="v1")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody connected: refused before any traffic
            listener.accept()
    finally:
        listener.close()


def test_unreachable_is_kept_for_connect_failures() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(RendezvousUnreachable, match="cannot reach"):
        pair(unique("nobody"), "127.0.0.1", port, timeout=0.5)

"""pair() against the project's rendezvous server: v1 and v2, errors, threads, no leaks."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from fmi_client import (
    FmiClientError,
    NameTooLong,
    PeerNeverArrived,
    PunchFailed,
    RendezvousRefused,
    RendezvousUnreachable,
    pair,
)
from rendezvous.embedded import BackgroundServer
from tcpunch import pack_endpoint
from tests.client.twosides import two_sides
from tests.facilities import require


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_fds_back_to(expected: int, within: float = 5.0) -> None:
    """Our fd count returns to ``expected``; the in-process server closes its ends async."""
    deadline = time.monotonic() + within
    while open_fds() != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds() == expected


def unique(what: str) -> str:
    return f"{what}-{os.getpid()}-{time.monotonic_ns()}"


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_pair_connects_the_two_sides(server, protocol: str) -> None:
    name = unique(f"pair-{protocol}")
    fds = open_fds()
    a, b = two_sides(lambda i: pair(name, server.host, server.port, timeout=20, protocol=protocol))
    try:
        assert a.getpeername() == b.getsockname()
        assert b.getpeername() == a.getsockname()
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        a.sendall(b"ping from a")
        assert b.recv(64) == b"ping from a"
        b.sendall(b"pong")
        assert a.recv(64) == b"pong"
    finally:
        a.close()
        b.close()
    assert_fds_back_to(fds)


def test_many_pairings_from_threads_at_once(server) -> None:
    """Safe from several threads: 8 pairings (16 threads) at once, no fd or thread left."""
    fds, threads_before = open_fds(), threading.active_count()
    names = [unique(f"threads{i}") for i in range(8)]
    sockets: dict[tuple[int, int], socket.socket] = {}
    errors: list[BaseException] = []

    def run(i: int, side: int) -> None:
        try:
            sockets[i, side] = pair(names[i], server.host, server.port, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, s)) for i in range(8) for s in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors
        assert len(sockets) == 16
        for i in range(8):
            sockets[i, 0].sendall(names[i].encode())
            assert sockets[i, 1].recv(200) == names[i].encode()
    finally:
        for sock in sockets.values():
            sock.close()
    assert_fds_back_to(fds)
    assert threading.active_count() == threads_before


def test_v2_resumes_after_server_timeout() -> None:
    """The server times a v2 waiter out after 0.3 s; the client resumes with its token."""
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, peer_timeout=0.3) as srv:
        name = unique("resume")

        def make(i: int) -> socket.socket:
            if i == 1:
                time.sleep(1.2)  # several server timeouts pass before the peer comes
            return pair(name, srv.host, srv.port, timeout=20)

        a, b = two_sides(make)
        try:
            a.sendall(b"x")
            assert b.recv(1) == b"x"
        finally:
            a.close()
            b.close()


def test_unreachable_server_raises_rendezvous_unreachable() -> None:
    holder = socket.socket()  # a bound port nobody listens on: connections are refused
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    fds = open_fds()
    try:
        with pytest.raises(RendezvousUnreachable) as info:
            pair("nobody-home", "127.0.0.1", port, timeout=0.5)
    finally:
        holder.close()
    assert "nobody-home" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value, FmiClientError)
    assert_fds_back_to(fds - 1)


def test_peer_that_never_arrives_raises_peer_never_arrived(server) -> None:
    fds = open_fds()
    name = unique("lonely")
    for protocol in ("v1", "v2"):
        with pytest.raises(PeerNeverArrived) as info:
            pair(name + protocol, server.host, server.port, timeout=0.5, protocol=protocol)
        assert name + protocol in str(info.value)
        assert f"{server.host}:{server.port}" in str(info.value)
    assert_fds_back_to(fds)


def test_names_that_do_not_fit_the_wire_are_refused(server) -> None:
    with pytest.raises(NameTooLong, match="99"):
        pair("n" * 100, server.host, server.port, timeout=1)
    with pytest.raises(NameTooLong, match="100"):
        pair("n" * 101, server.host, server.port, timeout=1, protocol="v1")
    # empty or NUL-holding names are not "too long": a plain ValueError says what is wrong
    for bad, why in (("", "empty"), ("a\0b", "NUL|control")):
        for protocol in ("v1", "v2"):
            with pytest.raises(ValueError, match=why) as refused:
                pair(bad, server.host, server.port, timeout=1, protocol=protocol)
            assert not isinstance(refused.value, NameTooLong)


def test_punch_failure_says_the_nat_looks_symmetric() -> None:
    """A v1 server that reports a rewritten port for us and a dead peer endpoint.

    The NAT lab (test_natlab.py) checks this through real symmetric NATs; this one runs
    everywhere: the punch must give up within its window and explain why.
    """
    dead = socket.socket()  # the "peer": a bound port that refuses connections
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, (ip, port) = listener.accept()
        with conn:
            conn.recv(100)
            conn.sendall(pack_endpoint(ip, (port + 7) % 65536 or 1))  # "rewritten" port
            conn.sendall(pack_endpoint("127.0.0.1", dead_port))

    thread = threading.Thread(target=serve)
    thread.start()
    fds = open_fds()
    try:
        with pytest.raises(PunchFailed) as info:
            pair(
                "sym",
                "127.0.0.1",
                listener.getsockname()[1],
                timeout=10,
                protocol="v1",
                punch_timeout=0.5,
                relay="never",  # relay="auto" would go on to the relay (test_natlab.py)
            )
    finally:
        thread.join(timeout=10)
        listener.close()
        dead.close()
    message = str(info.value)
    assert "symmetric" in message and "'sym'" in message
    assert f"127.0.0.1:{dead_port}" in message
    assert_fds_back_to(fds - 2)


def test_v1_rejoins_when_the_server_ends_its_wait() -> None:
    """A v1 server closes a wait after 0.5 s; the client rejoins and still meets its peer."""
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, v1_peer_timeout=0.5) as srv:
        name = unique("v1-rejoin")

        def make(i: int) -> socket.socket:
            if i == 1:
                time.sleep(1.3)  # two of the server's waits end before the peer comes
            return pair(name, srv.host, srv.port, timeout=20, protocol="v1")

        a, b = two_sides(make)
        try:
            a.sendall(b"rejoined")
            assert b.recv(16) == b"rejoined"
        finally:
            a.close()
            b.close()


def test_v1_wait_ended_by_the_server_until_our_deadline_is_peer_never_arrived() -> None:
    """Not RendezvousUnreachable: the server answered, only the peer did not come."""
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, v1_peer_timeout=0.5) as srv:
        name = unique("v1-expiry")
        fds = open_fds()
        started = time.monotonic()
        with pytest.raises(PeerNeverArrived) as info:
            pair(name, srv.host, srv.port, protocol="v1", timeout=2)
        waited = time.monotonic() - started
        assert_fds_back_to(fds)
    message = str(info.value)
    assert repr(name) in message and f"{srv.host}:{srv.port}" in message
    assert "ended our wait" in message and info.value.name == name
    assert waited > 1.5  # it kept rejoining instead of giving up at the first expiry


class FakeV1Server:
    """A listener that answers one connection with fixed bytes, then closes it."""

    def __init__(self, reply: bytes) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            conn.recv(100)
            if self.reply:
                conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(timeout=15)
        self.listener.close()


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"", "refused the request"),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "it is the server's HTTP port"),
        (pack_endpoint("127.0.0.1", 40000) + b"abc", "partial peer endpoint"),
        (pack_endpoint("127.0.0.1", 0), "port 0"),
    ],
    ids=["closes-at-once", "http", "partial", "port-zero"],
)
def test_v1_server_that_closes_at_once_or_sends_garbage_is_unreachable(
    reply: bytes, says: str
) -> None:
    fake = FakeV1Server(reply)
    fds = open_fds()
    # a close before any byte is how servers refuse (caps, junk names): RendezvousRefused
    expected = RendezvousRefused if not reply else RendezvousUnreachable
    try:
        with pytest.raises(expected) as info:
            pair("garbage-test", "127.0.0.1", fake.port, protocol="v1", timeout=5)
    finally:
        fake.close()
    assert says in str(info.value) and "'garbage-test'" in str(info.value)
    assert_fds_back_to(fds - 1)  # the fake's listener is closed too


def tcp_option(sock: socket.socket, name: str) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))


def test_punched_sockets_have_keepalive_by_default(server) -> None:
    require(
        all(hasattr(socket, n) for n in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")),
        "Linux TCP keepalive socket options",
    )
    name = unique("keepalive")
    a, b = two_sides(lambda i: pair(name, server.host, server.port, timeout=20))
    try:
        for sock in (a, b):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert tcp_option(sock, "TCP_KEEPIDLE") == 15
            assert tcp_option(sock, "TCP_KEEPINTVL") == 5
            assert tcp_option(sock, "TCP_KEEPCNT") == 4
            if hasattr(socket, "TCP_USER_TIMEOUT"):  # off by default: it kills slow readers
                assert tcp_option(sock, "TCP_USER_TIMEOUT") == 0
    finally:
        a.close()
        b.close()


def test_keepalive_and_user_timeout_are_configurable(server) -> None:
    require(hasattr(socket, "TCP_USER_TIMEOUT"), "Linux TCP_USER_TIMEOUT")
    name = unique("keepalive-custom")

    def make(i: int) -> socket.socket:
        if i == 1:
            return pair(name, server.host, server.port, timeout=20, keepalive=False)
        return pair(
            name,
            server.host,
            server.port,
            timeout=20,
            keepalive_idle=2,
            keepalive_interval=1.5,  # whole seconds on the wire: rounded up
            keepalive_count=3,
            user_timeout=7.5,
        )

    a, b = two_sides(make)
    try:
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert tcp_option(a, "TCP_KEEPIDLE") == 2
        assert tcp_option(a, "TCP_KEEPINTVL") == 2
        assert tcp_option(a, "TCP_KEEPCNT") == 3
        assert tcp_option(a, "TCP_USER_TIMEOUT") == 7500
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "bad",
    [{"keepalive_idle": 0}, {"keepalive_count": 0}, {"keepalive_count": 200}, {"user_timeout": 0}],
)
def test_bad_keepalive_settings_are_refused_before_any_traffic(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        pair("never-sent", "127.0.0.1", 1, timeout=1, **bad)


@pytest.mark.parametrize("verify_bytes", [65536, 0])
def test_the_result_is_a_socket_that_says_how_the_link_was_made(server, verify_bytes) -> None:
    name = unique("link-info")
    a, b = two_sides(
        lambda i: pair(name, server.host, server.port, timeout=20, verify_bytes=verify_bytes)
    )
    try:
        for sock in (a, b):
            assert isinstance(sock, socket.socket) and sock.getblocking()
            assert sock.link.path == "direct" and sock.link.name == name
            assert sock.link.pairings == 1 and sock.link.stalls == 0
            assert sock.link.verified_bytes == verify_bytes
            assert (sock.link.verify_s > 0) == bool(verify_bytes)
        a.sendall(b"after the check")  # nothing of the check is left in the stream
        b.settimeout(5)
        assert b.recv(100) == b"after the check"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"relay": "sometimes"}, ValueError),
        ({"verify_bytes": -1}, ValueError),
        ({"verify_timeout": 0}, ValueError),
    ],
)
def test_bad_path_and_check_settings_are_refused_before_any_traffic(bad: dict, error) -> None:
    with pytest.raises(error, match=next(iter(bad))):
        pair("never-sent", "127.0.0.1", 1, timeout=1, **bad)


def test_relay_always_goes_through_the_servers_relay(server) -> None:
    """Both sides ask for the relay right after the rendezvous; the link check and the
    user's bytes cross it, and the link says which path it took."""
    name = f"always-{os.getpid()}-{time.monotonic_ns()}"
    mine, theirs = two_sides(
        lambda _: pair(name, server.host, server.port, timeout=10, relay="always")
    )
    with mine, theirs:
        assert mine.link.path == theirs.link.path == "relay"
        assert mine.link.verified_bytes == 65536  # the check ran through the relay too
        assert mine.getpeername()[1] == server.port  # the far end is the server
        mine.sendall(b"via the relay")
        assert theirs.recv(100) == b"via the relay"


def test_pair_with_a_job_secret_authenticates_and_encrypts(server) -> None:
    """pair(secret=...): both sides prove the secret before the socket is theirs; the link
    is TLS; a side with the wrong secret gets PeerAuthenticationFailed, never the link."""
    import ssl

    from fmi_client import PeerAuthenticationFailed

    name = f"secret-{os.getpid()}-{time.monotonic_ns()}"
    got: list[object] = []

    def peer(secret: str, rank: int, other: int, timeout: float) -> None:
        try:
            got.append(
                pair(name, server.host, server.port, timeout=timeout, secret=secret,
                     my_rank=rank, peer_rank=other)
            )  # fmt: skip
        except Exception as exc:  # the test looks at what each side got
            got.append(exc)

    other = threading.Thread(target=peer, args=("job-secret-0123456789abcdef", 1, 0, 10))
    other.start()
    mine = pair(name, server.host, server.port, timeout=10, secret="job-secret-0123456789abcdef",
                my_rank=0, peer_rank=1)  # fmt: skip
    other.join(15)
    (theirs,) = got
    assert isinstance(mine, ssl.SSLSocket) and isinstance(theirs, ssl.SSLSocket)
    with mine, theirs:
        mine.sendall(b"sealed")
        assert theirs.recv(100) == b"sealed"
    with pytest.raises(ValueError, match="my_rank and peer_rank"):
        pair(name, server.host, server.port, timeout=1, secret="job-secret-0123456789abcdef")
    got.clear()
    wrong = f"{name}-wrong"
    name = wrong
    other = threading.Thread(target=peer, args=("another-secret-0123456789ab", 1, 0, 3))
    other.start()
    with pytest.raises(PeerAuthenticationFailed) as refused:
        pair(wrong, server.host, server.port, timeout=3, secret="job-secret-0123456789abcdef",
             my_rank=0, peer_rank=1)  # fmt: skip
    other.join(10)
    assert wrong in str(refused.value) and "job-secret" not in str(refused.value)
    assert isinstance(got[0], PeerAuthenticationFailed)

"""pair(): meet a peer at a TCPunch rendezvous server, then punch a direct TCP connection.

The rendezvous socket is bound (with SO_REUSEADDR and SO_REUSEPORT) to an ephemeral port
whose real number we learn with getsockname(). Once the server reports the peer's public
endpoint we punch from that same port by TCP simultaneous open: a listener plus
non-blocking connect() attempts, watched by one selector, first success wins. Unlike the
original C++ client we never bind the *reported* public port, so NATs that rewrite ports
but keep a stable mapping work too; for NATs that pick a new port per destination
(symmetric) we give up quickly with an error that says so.
"""

from __future__ import annotations

import errno
import logging
import math
import selectors
import socket
import time
from dataclasses import dataclass

from fmi_client.address import DEFAULT_PORT, check_host, check_port
from fmi_client.errors import (
    NameTooLong,
    PeerNeverArrived,
    PunchFailed,
    RendezvousRefused,
    RendezvousUnreachable,
)
from tcpunch import (
    ENDPOINT_SIZE,
    NO_TOKEN,
    V1_CONTROL_BYTES,
    V2_RESPONSE_SIZE,
    Endpoint,
    ProtocolError,
    Status,
    decode_v2_response,
    encode_v1_name,
    encode_v2_request,
    unpack_endpoint,
)

log = logging.getLogger("fmi_client")

#: How long the punch phase may take once both sides are paired. Both learn about each
#: other at the same instant, so a punch that works takes a few round trips; a NAT that
#: blocks it will not start working later.
PUNCH_WINDOW = 3.0
#: Pause after a failed connect() attempt (e.g. refused because the peer's listener was
#: not up yet); doubles up to the cap. Milliseconds, so a punch takes round trips.
RETRY_FIRST = 0.005
RETRY_CAP = 0.1
#: A connect() attempt still unanswered after this long is replaced by a fresh one.
ATTEMPT_LIFETIME = 1.0
#: Pause between attempts to reach a server that refuses connections (it may be starting).
SERVER_RETRY_FIRST = 0.05
SERVER_RETRY_CAP = 1.0
#: Liveness of punched connections (seconds, probes): an idle connection whose peer vanished
#: (a frozen Lambda, a host gone from the network) fails after about IDLE + INTERVAL * COUNT.
KEEPALIVE_IDLE = 15
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 4
#: A v1 wait the server ended is rejoined only if at least this much of the deadline is left.
MIN_REJOIN = 0.05


@dataclass
class _Rendezvous:
    sock: socket.socket
    local: Endpoint  # our socket's real address
    public: Endpoint  # how the server saw us
    peer: Endpoint  # the peer's public endpoint, as the server saw it


class _ServerClosed(Exception):
    """EOF or reset from the server; ``received`` bytes of the awaited reply had come."""

    def __init__(self, why: str, received: int) -> None:
        super().__init__(why)
        self.received = received


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _reuse_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _resolve(host: str, port: int, name: str) -> tuple[str, int]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise RendezvousUnreachable(
            f"cannot resolve the rendezvous host {host!r} for pairing {name!r}: {exc}; "
            "check the host name (TCPunch servers speak IPv4)"
        ) from exc
    ip, resolved_port = infos[0][4][:2]
    return ip, resolved_port


def _connect_server(server: tuple[str, int], name: str, deadline: float) -> socket.socket:
    """A connected rendezvous socket; retries refused connections until the deadline."""
    pause = SERVER_RETRY_FIRST
    while True:
        sock = _reuse_socket()
        try:
            sock.bind(("0.0.0.0", 0))
            sock.settimeout(max(_remaining(deadline), 0.001))
            sock.connect(server)
            return sock
        except OSError as exc:
            sock.close()
            if _remaining(deadline) <= pause:
                raise RendezvousUnreachable(
                    f"cannot reach the rendezvous server {server[0]}:{server[1]} for pairing "
                    f"{name!r}: {exc}. Check the address and port and that the server is "
                    "running (`rendezvous serve`) and reachable from here."
                ) from exc
            log.info("rendezvous server %s:%d not reachable yet (%s); retrying", *server, exc)
            time.sleep(pause)
            pause = min(pause * 2, SERVER_RETRY_CAP)


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes; TimeoutError at the deadline, _ServerClosed on EOF."""
    buf = bytearray()
    while len(buf) < size:
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(buf))
        except ConnectionError as exc:
            raise _ServerClosed(f"{exc} after {len(buf)} of {size} bytes", len(buf)) from exc
        if not chunk:
            raise _ServerClosed(f"EOF after {len(buf)} of {size} bytes", len(buf))
        buf += chunk
    return bytes(buf)


def _never_arrived(
    name: str, server: tuple[str, int], timeout: float, v1_expiries: int = 0
) -> PeerNeverArrived:
    rejoined = (
        f" The v1 server ended our wait {v1_expiries} time(s) (its own wait limit); we "
        "rejoined each time until our deadline."
        if v1_expiries
        else ""
    )
    return PeerNeverArrived(
        f"pairing {name!r}: no peer arrived at the rendezvous server {server[0]}:{server[1]} "
        f"within {timeout:.1f} s.{rejoined} Check that the other side uses the same name and "
        "server, or give it more time (timeout=...).",
        name=name,
    )


def _lost_server(name: str, server: tuple[str, int], why: str) -> RendezvousUnreachable:
    return RendezvousUnreachable(
        f"pairing {name!r}: the rendezvous server {server[0]}:{server[1]} closed the "
        f"connection before pairing ({why}). Is it a TCPunch server, and does it accept "
        "this protocol version?"
    )


def _refused(name: str, server: tuple[str, int], what: str) -> RendezvousRefused:
    return RendezvousRefused(
        f"pairing {name!r}: the rendezvous server {server[0]}:{server[1]} refused the request "
        f"({what}). Likely reasons: its --name-pattern does not match this name; this IP "
        "address already has --max-waiting-per-ip clients waiting; the server is full "
        "(--max-connections); or the name breaks the name rules (v2: at most 99 UTF-8 bytes; "
        "v1: at most 100 bytes, no control characters). The server's log says which."
    )


def _http_port(name: str, server: tuple[str, int]) -> RendezvousUnreachable:
    return RendezvousUnreachable(
        f"pairing {name!r}: {server[0]}:{server[1]}: this port answers HTTP: it is the "
        "server's HTTP port (/health, /metrics), not the rendezvous port (10000 by default, "
        "`rendezvous serve --port`)."
    )


def _garbage(name: str, server: tuple[str, int], what: str) -> RendezvousUnreachable:
    return RendezvousUnreachable(
        f"pairing {name!r}: the rendezvous server {server[0]}:{server[1]} answered with "
        f"something that is not a TCPunch v1 reply ({what}). Is it a TCPunch server? "
        "Try protocol='v2' if it is the fork's server."
    )


def _v1_no_more_data(sock: socket.socket) -> bool:
    """Whether nothing follows the peer's endpoint yet: a v1 server sends 16 bytes and closes."""
    sock.setblocking(False)
    try:
        return not sock.recv(1, socket.MSG_PEEK)
    except OSError:  # nothing yet (EAGAIN), or a reset: neither makes the reply wrong
        return True


def _rendezvous_v1(name: str, server: tuple[str, int], deadline: float, timeout: float):
    """Wait at a v1 server, rejoining whenever the server ends a wait that went on too long.

    A v1 server answers our own endpoint at once, the peer's when it comes, then closes.
    When its wait limit passes it just closes: EOF after our endpoint means "rejoin", not
    "broken server". EOF before our endpoint, a partial reply, or bytes after the reply do
    mean the far end is not a TCPunch v1 server.
    """
    request = encode_v1_name(name)
    expiries = 0
    pause = SERVER_RETRY_FIRST
    while True:
        sock = _connect_server(server, name, deadline)
        joined = time.monotonic()
        try:
            local = Endpoint(*sock.getsockname()[:2])
            try:
                sock.sendall(request)
            except ConnectionError as exc:
                raise _lost_server(name, server, f"sending the name: {exc}") from None
            log.info("pairing %r: waiting at %s:%d (v1)", name, *server)
            try:
                first = _recv_exact(sock, ENDPOINT_SIZE, deadline)
            except _ServerClosed as exc:
                if exc.received == 0:
                    raise _refused(name, server, f"it closed the connection: {exc}") from None
                raise _lost_server(name, server, str(exc)) from None
            if first.startswith(b"HTTP/"):
                raise _http_port(name, server)
            public = unpack_endpoint(first)
            if public.port == 0:
                raise _garbage(name, server, f"our own endpoint {public} has port 0")
            try:
                reply = _recv_exact(sock, ENDPOINT_SIZE, deadline)
            except _ServerClosed as exc:
                if exc.received:
                    raise _garbage(name, server, f"a partial peer endpoint: {exc}") from None
                reply = None
            if reply is not None:
                peer = unpack_endpoint(reply)
                if peer.port == 0 or peer.ip == "0.0.0.0":
                    raise _garbage(name, server, f"peer endpoint {peer}")
                if not _v1_no_more_data(sock):
                    raise _garbage(name, server, "more than two 8-byte endpoints")
                return _Rendezvous(sock, local, public, peer)
        except TimeoutError:
            sock.close()
            raise _never_arrived(name, server, timeout, expiries) from None
        except BaseException:
            sock.close()
            raise
        sock.close()
        # The server ended our wait (its v1 wait limit): rejoin under the same name.
        expiries += 1
        waited = time.monotonic() - joined
        short = waited < SERVER_RETRY_CAP  # a server that ends waits at once: do not hammer it
        if _remaining(deadline) <= (pause if short else 0) + MIN_REJOIN:
            raise _never_arrived(name, server, timeout, expiries)
        log.info("pairing %r: the v1 server ended our wait after %.1f s; rejoining", name, waited)
        if short:
            time.sleep(pause)
            pause = min(pause * 2, SERVER_RETRY_CAP)
        else:
            pause = SERVER_RETRY_FIRST


def _rendezvous_v2(name: str, server: tuple[str, int], deadline: float, timeout: float):
    token = NO_TOKEN
    pause = SERVER_RETRY_FIRST
    while True:
        request = encode_v2_request(name, token)
        sock = _connect_server(server, name, deadline)
        try:
            local = Endpoint(*sock.getsockname()[:2])
            try:
                sock.sendall(request)
            except ConnectionError as exc:
                if token == NO_TOKEN:
                    raise _refused(name, server, f"it closed the connection: {exc}") from None
                raise _ServerClosed(str(exc), 0) from exc
            answered = False
            while True:
                try:
                    raw = _recv_exact(sock, V2_RESPONSE_SIZE, deadline)
                except _ServerClosed as exc:
                    if token == NO_TOKEN and not answered and exc.received == 0:
                        raise _refused(name, server, f"it closed the connection: {exc}") from None
                    raise
                if raw.startswith(b"HTTP/"):
                    raise _http_port(name, server)
                answered = True
                response = decode_v2_response(raw)
                if response.status is Status.WAITING:
                    token = response.token or token
                    log.info("pairing %r: waiting for the peer at %s:%d", name, *server)
                    continue
                if response.status is Status.PAIRED:
                    return _Rendezvous(sock, local, response.you, response.peer)
                if response.status is Status.TIMEOUT:
                    token = response.token or token
                    log.info("pairing %r: server timed out the wait; resuming", name)
                    break
                # ERROR: a stale or unknown token, or a request the server refused.
                if token == NO_TOKEN:
                    raise _refused(name, server, "it answered ERROR to a fresh v2 request")
                token = NO_TOKEN
                break
        except TimeoutError:
            sock.close()
            raise _never_arrived(name, server, timeout) from None
        except _ServerClosed as exc:
            sock.close()
            if token == NO_TOKEN or _remaining(deadline) <= pause:
                raise _lost_server(name, server, str(exc)) from None
            time.sleep(pause)
            pause = min(pause * 2, SERVER_RETRY_CAP)
            continue
        except ProtocolError as exc:
            sock.close()
            raise RendezvousUnreachable(
                f"pairing {name!r}: the server {server[0]}:{server[1]} sent an invalid v2 "
                f"response ({exc}); is it a TCPunch v2 server? Try protocol='v1'."
            ) from exc
        except BaseException:
            sock.close()
            raise
        sock.close()
        if _remaining(deadline) <= 0:
            raise _never_arrived(name, server, timeout)


def _punch(rv: _Rendezvous, name: str, deadline: float) -> socket.socket:
    """Simultaneous open from rv.local's port to rv.peer; the connected socket or PunchFailed."""
    port = rv.local.port
    peer = (rv.peer.ip, rv.peer.port)
    started = time.monotonic()
    sel = selectors.DefaultSelector()
    listener = _reuse_socket()
    attempt: socket.socket | None = None
    attempt_started = 0.0
    next_attempt = started
    pause = RETRY_FIRST
    winner: socket.socket | None = None
    attempts = 0
    last_error = "no answer"
    try:
        try:
            listener.bind(("0.0.0.0", port))
        except OSError as exc:
            raise PunchFailed(
                f"punch failed for pairing {name!r}: cannot listen on our rendezvous port "
                f"{port} ({exc}); another socket holds it without SO_REUSEPORT"
            ) from exc
        listener.listen(8)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ)
        while winner is None:
            now = time.monotonic()
            if now >= deadline:
                break
            if attempt is not None and now - attempt_started > ATTEMPT_LIFETIME:
                sel.unregister(attempt)
                attempt.close()
                attempt = None
                next_attempt = now
            if attempt is None and now >= next_attempt:
                attempt = _reuse_socket()
                attempts += 1
                try:
                    attempt.bind(("0.0.0.0", port))
                    attempt.setblocking(False)
                    code = attempt.connect_ex(peer)
                except OSError as exc:
                    code = exc.errno or errno.EIO
                if code in (0, errno.EINPROGRESS):
                    attempt_started = now
                    sel.register(attempt, selectors.EVENT_WRITE)
                else:
                    last_error = errno.errorcode.get(code, str(code))
                    attempt.close()
                    attempt = None
                    next_attempt = now + pause
                    pause = min(pause * 2, RETRY_CAP)
            wake = deadline if attempt is not None else min(deadline, next_attempt)
            if attempt is not None:
                wake = min(wake, attempt_started + ATTEMPT_LIFETIME)
            for key, _events in sel.select(max(wake - time.monotonic(), 0)):
                if key.fileobj is listener:
                    try:
                        conn, addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    if (addr[0], addr[1]) == peer:
                        winner = conn
                        break
                    conn.close()  # someone else knocked on our port; not our peer
                elif key.fileobj is attempt:
                    code = attempt.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    sel.unregister(attempt)
                    if code == 0:
                        winner, attempt = attempt, None
                        break
                    last_error = errno.errorcode.get(code, str(code))
                    attempt.close()
                    attempt = None
                    next_attempt = time.monotonic() + pause
                    pause = min(pause * 2, RETRY_CAP)
    finally:
        sel.close()
        listener.close()
        if attempt is not None:
            attempt.close()
    if winner is None:
        elapsed = time.monotonic() - started
        message = (
            f"punch failed for pairing {name!r}: no TCP connection between us "
            f"({rv.local}, seen by the server as {rv.public}) and the peer {rv.peer} "
            f"within {elapsed:.1f} s ({attempts} connect attempts, last: {last_error})."
        )
        if rv.public.port != rv.local.port:
            message += (
                f" The server saw our port as {rv.public.port} but we are bound to port "
                f"{rv.local.port}: our NAT rewrote the port, so it looks symmetric "
                "(a new mapping per destination, e.g. MASQUERADE --random-fully) and hole "
                "punching cannot get through it. Use a port-preserving NAT or a relay."
            )
        else:
            message += (
                " Our NAT kept our port; if the peer sits behind a symmetric NAT (one that "
                "rewrites ports per destination) or a firewall, punching cannot work."
            )
        raise PunchFailed(message)
    winner.setblocking(True)
    winner.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return winner


@dataclass(frozen=True)
class Liveness:
    """TCP keepalive (and optionally TCP_USER_TIMEOUT) settings for a punched socket."""

    idle: float = KEEPALIVE_IDLE
    interval: float = KEEPALIVE_INTERVAL
    count: int = KEEPALIVE_COUNT
    user_timeout: float | None = None

    def check(self) -> None:
        if self.idle < 1 or self.interval < 1:
            raise ValueError(
                f"keepalive_idle and keepalive_interval are whole seconds >= 1, not "
                f"{self.idle!r} and {self.interval!r}"
            )
        if not 1 <= self.count <= 127:
            raise ValueError(f"keepalive_count must be in 1..127 (Linux), not {self.count!r}")
        if self.user_timeout is not None and self.user_timeout <= 0:
            raise ValueError(
                f"user_timeout must be positive seconds or None, not {self.user_timeout!r}"
            )

    def apply(self, sock: socket.socket) -> None:
        """Set what this platform has (Linux: all; macOS: no TCP_USER_TIMEOUT)."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle_option = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
        for option, value in (
            (idle_option, math.ceil(self.idle)),
            (getattr(socket, "TCP_KEEPINTVL", None), math.ceil(self.interval)),
            (getattr(socket, "TCP_KEEPCNT", None), self.count),
        ):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
        if self.user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            milliseconds = max(1, math.ceil(self.user_timeout * 1000))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)


def pair(
    name: str,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    timeout: float = 120.0,
    protocol: str = "v2",
    punch_timeout: float = PUNCH_WINDOW,
    keepalive: bool = True,
    keepalive_idle: float = KEEPALIVE_IDLE,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    keepalive_count: int = KEEPALIVE_COUNT,
    user_timeout: float | None = None,
) -> socket.socket:
    """A TCP socket connected to whoever else asks ``host:port`` to pair ``name``.

    ``timeout`` bounds everything (reaching the server, waiting for the peer, punching);
    the punch itself gets at most ``punch_timeout`` of it. ``protocol`` is "v2" (the
    fork's protocol, resumes after server timeouts) or "v1" (the original TCPunch, FMI's
    server; when it ends a long wait we rejoin until ``timeout``). Raises
    RendezvousUnreachable, RendezvousRefused (the server answered but turned the request
    down), PeerNeverArrived or PunchFailed; ValueError for a port outside 1..65535, an
    empty host or a v1 name with control characters. Safe to call from several
    threads at once; nothing is left open on any path but the result.

    With ``keepalive`` (the default) the socket sends TCP keepalive probes after
    ``keepalive_idle`` s of silence, every ``keepalive_interval`` s, and gives up after
    ``keepalive_count`` unanswered ones, so a peer that vanished (frozen, unplugged) makes a
    waiting recv() fail with an OSError (about 35 s with the defaults) instead of blocking
    forever. ``user_timeout`` (seconds, Linux TCP_USER_TIMEOUT, off by default) also
    bounds how long sent data may stay unacknowledged, but it then replaces
    ``keepalive_count`` and it resets the connection when the peer, alive, stops reading
    for that long with our data queued (a zero window): only set it above the longest
    pause of a peer that does not read.
    """
    if protocol not in ("v1", "v2"):
        raise ValueError(f"protocol must be 'v1' or 'v2', not {protocol!r}")
    host = check_host(host)
    port = check_port(port)
    liveness = (
        Liveness(keepalive_idle, keepalive_interval, keepalive_count, user_timeout)
        if keepalive
        else None
    )
    if liveness is not None:
        liveness.check()
    started = time.monotonic()
    deadline = started + timeout
    if protocol == "v1" and isinstance(name, str) and V1_CONTROL_BYTES.search(name.encode()):
        raise ValueError(
            f"pairing name {name!r} contains control characters, which v1 servers refuse as "
            "junk; use printable characters only"
        )
    try:
        if protocol == "v1":
            encode_v1_name(name)
        else:
            encode_v2_request(name)
    except ProtocolError as exc:
        raise NameTooLong(f"pairing name {name!r} cannot be sent with {protocol}: {exc}") from exc
    server = _resolve(host, port, name)
    if protocol == "v1":
        rv = _rendezvous_v1(name, server, deadline, timeout)
    else:
        rv = _rendezvous_v2(name, server, deadline, timeout)
    try:
        log.info("pairing %r: paired with %s; punching from %s", name, rv.peer, rv.local)
        sock = _punch(rv, name, min(deadline, time.monotonic() + punch_timeout))
    finally:
        rv.sock.close()
    if liveness is not None:
        try:
            liveness.apply(sock)
        except BaseException:
            sock.close()
            raise
    return sock

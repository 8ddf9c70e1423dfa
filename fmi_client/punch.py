"""pair(): meet a peer at a TCPunch rendezvous server, then punch a direct TCP connection.

The conversation with the server is :mod:`fmi_client.meet` (sockets around tcpunch's
sans-IO client exchange); this module holds pair() and the punch. The rendezvous socket
is bound (with SO_REUSEADDR and SO_REUSEPORT) to an ephemeral port whose real number we
learn with getsockname(). Once the server reports the peer's public endpoint we punch
from that same port by TCP simultaneous open: a listener plus non-blocking connect()
attempts, watched by one selector, first success wins. Unlike the original C++ client
we never bind the *reported* public port, so NATs that rewrite ports but keep a stable
mapping work too; for NATs that pick a new port per destination (symmetric) we give up
quickly with an error that says so.
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
from fmi_client.errors import NameTooLong, PunchFailed
from fmi_client.meet import Meeting, exchange_for, meet, resolve, reuse_socket
from tcpunch import V1_CONTROL_BYTES, ProtocolError

log = logging.getLogger("fmi_client")

#: How long the punch phase may take once both sides are paired. Both learn about each
#: other at the same instant, so a punch that works takes a few round trips; a NAT that
#: blocks it will not start working later.
PUNCH_WINDOW = 3.0
#: Pacing of connect() attempts after a failure. Why it matters: a NAT router that
#: answers an unsolicited SYN with a reset (a Linux router without INPUT rules) sends
#: that reset through our NAT, which closes the mapping our SYN had just opened; the
#: peer's SYN then meets a closed mapping and is reset too. Through two such NATs the
#: punch only works when the two sides' SYNs cross in flight, i.e. are sent less than
#: the round trip between the NATs apart (microseconds in a lab, milliseconds on the
#: Internet). Free-running or jittered retries rarely line up; so both sides retry on a
#: grid that starts when the punch starts (both learn of each other at the same
#: instant): every RETRY_PERIOD, and the side with the higher public endpoint every
#: RETRY_PERIOD + RETRY_SWEEP, so the offset between the two grids sweeps through the
#: crossing window instead of staying wherever the start left it. (The original C++
#: client retries exactly 100 ms after each reset, which lines up by luck.) After
#: RETRY_FAST_FOR seconds, attempts are RETRY_SLOW apart: that bounds what a peer behind
#: a NAT that can never be punched receives.
RETRY_PERIOD = 0.0005
RETRY_SWEEP = 0.00001
RETRY_FAST_FOR = 1.0
RETRY_SLOW = 0.01
#: A connect() attempt still unanswered after this long is replaced by a fresh one.
ATTEMPT_LIFETIME = 1.0
#: Liveness of punched connections (seconds, probes): an idle connection whose peer vanished
#: (a frozen Lambda, a host gone from the network) fails after about IDLE + INTERVAL * COUNT.
KEEPALIVE_IDLE = 15
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 4


def _next_slot(started: float, now: float, period: float) -> float:
    """When to make the next connect() after a failure at ``now``: the next tick of a grid
    ``period`` apart that starts when the punch started (see RETRY_PERIOD)."""
    if now - started >= RETRY_FAST_FOR:
        period = RETRY_SLOW
    return started + (math.floor((now - started) / period) + 1) * period


def _select(sel: selectors.BaseSelector, timeout: float) -> list[tuple[selectors.SelectorKey, int]]:
    """``sel.select(timeout)``, honouring sub-millisecond timeouts (epoll rounds them up
    to a whole millisecond, which would space our retries too far apart)."""
    if 0 < timeout < 0.001:
        time.sleep(timeout)
        timeout = 0
    return sel.select(timeout)


def _punch(rv: Meeting, name: str, deadline: float) -> socket.socket:
    """Simultaneous open from rv.local's port to rv.peer; the connected socket or PunchFailed.

    One listener stays open on our port for the whole window (a peer's SYN that gets
    through lands there once our own attempt has died); connect() attempts follow one
    another on a grid (see RETRY_PERIOD) while they fail at once, or after
    ATTEMPT_LIFETIME without an answer.
    """
    port = rv.local.port
    peer = (rv.peer.ip, rv.peer.port)
    started = time.monotonic()
    # the side with the higher public endpoint ticks a little slower (see RETRY_PERIOD)
    slower = (rv.public.ip, rv.public.port) > (rv.peer.ip, rv.peer.port)
    period = RETRY_PERIOD + (RETRY_SWEEP if slower else 0.0)
    sel = selectors.DefaultSelector()
    listener = reuse_socket()
    attempt: socket.socket | None = None
    attempt_started = 0.0
    next_attempt = started
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
                attempt = reuse_socket()
                attempts += 1
                attempt_started = time.monotonic()
                try:
                    attempt.bind(("0.0.0.0", port))
                    attempt.setblocking(False)
                    code = attempt.connect_ex(peer)
                except OSError as exc:
                    code = exc.errno or errno.EIO
                if code in (0, errno.EINPROGRESS):
                    sel.register(attempt, selectors.EVENT_WRITE)
                else:
                    last_error = errno.errorcode.get(code, str(code))
                    attempt.close()
                    attempt = None
                    next_attempt = _next_slot(started, time.monotonic(), period)
            wake = deadline if attempt is not None else min(deadline, next_attempt)
            if attempt is not None:
                wake = min(wake, attempt_started + ATTEMPT_LIFETIME)
            for key, _events in _select(sel, max(wake - time.monotonic(), 0)):
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
                    failed_at = time.monotonic()
                    last_error = errno.errorcode.get(code, str(code))
                    attempt.close()
                    attempt = None
                    next_attempt = _next_slot(started, failed_at, period)
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
        exchange = exchange_for(name, protocol)
    except ProtocolError as exc:
        raise NameTooLong(f"pairing name {name!r} cannot be sent with {protocol}: {exc}") from exc
    server = resolve(host, port, name)
    rv = meet(exchange, name, server, deadline, timeout)
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

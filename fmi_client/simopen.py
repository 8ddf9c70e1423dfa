"""The punch: TCP simultaneous open from the rendezvous socket's port, one selector.

A listener on our rendezvous port plus non-blocking connect() attempts to the peer's
public endpoint, paced on a shared retry grid (see RETRY_PERIOD); whichever connects
first is the link. :func:`fmi_client.punch.pair` calls :func:`punch` once per round.
"""

from __future__ import annotations

import errno
import logging
import math
import selectors
import socket
import time

from fmi_client.errors import PunchFailed
from fmi_client.meet import Meeting, reuse_socket

log = logging.getLogger("fmi_client")

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
#: Waits shorter than this (the grid's) are polled, not slept (see _select).
SPIN_BELOW = 0.001
#: A round in which every attempt so far was answered by a reset ends after RESET_ROUND
#: seconds or RESET_ROUND_RTTS of the slowest such answer, whichever is longer: the two
#: sides' SYNs cross mostly in the first few milliseconds, while both have just been
#: woken by the server's reply; later, a fresh pairing (a new start) beats waiting.
RESET_ROUND = 0.05
RESET_ROUND_RTTS = 20
#: A connect() attempt still unanswered after this long is replaced by a fresh one.
ATTEMPT_LIFETIME = 1.0


def _next_slot(started: float, now: float, period: float) -> float:
    """When to make the next connect() after a failure at ``now``: the next tick of a grid
    ``period`` apart that starts when the punch started (see RETRY_PERIOD)."""
    if now - started >= RETRY_FAST_FOR:
        period = RETRY_SLOW
    return started + (math.floor((now - started) / period) + 1) * period


def _select(sel: selectors.BaseSelector, timeout: float) -> list[tuple[selectors.SelectorKey, int]]:
    """``sel.select(timeout)``; a wait shorter than SPIN_BELOW polls instead of sleeping,
    so that the next attempt leaves on its grid tick rather than a scheduler's wake-up
    later (epoll also rounds sub-millisecond timeouts up to a whole millisecond)."""
    if 0 < timeout < SPIN_BELOW:
        until = time.monotonic() + timeout
        while True:
            ready = sel.select(0)
            if ready or time.monotonic() >= until:
                return ready
    return sel.select(timeout)


def punch(rv: Meeting, name: str, deadline: float) -> socket.socket:
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
    attempts = resets = 0
    rtt = 0.0  # longest connect-to-reset time seen
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
            if resets == attempts and now - started > max(RESET_ROUND, RESET_ROUND_RTTS * rtt):
                break  # only resets so far: the SYNs do not cross; a fresh pairing may
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
                    if code == errno.ECONNREFUSED:
                        resets += 1
                        rtt = max(rtt, failed_at - attempt_started)
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

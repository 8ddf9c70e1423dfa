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

import contextlib
import errno
import logging
import math
import selectors
import socket
import struct
import time

from fmi_client.address import DEFAULT_PORT, check_host, check_port
from fmi_client.credential import resolve_credential
from fmi_client.errors import LinkCheckFailed, NameTooLong, PeerNeverArrived, PunchFailed
from fmi_client.link import LinkInfo, PairedSocket
from fmi_client.linkcheck import CheckFailed, verify_link
from fmi_client.liveness import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, Liveness
from fmi_client.meet import Meeting, exchange_for, meet, resolve, reuse_socket
from fmi_client.relay import RelayRefused, relay_connect
from tcpunch import V1_CONTROL_BYTES, Endpoint, ProtocolError, Reason
from tcpunch.relay import pairing_session

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
#: Waits shorter than this (the grid's) are polled, not slept (see _select).
SPIN_BELOW = 0.001
#: One punch round: a punch that has not got through by then is given up and the pair
#: re-pairs under a fresh name (new ports, so new NAT mappings and a new start for the
#: retry grid), within ``punch_timeout`` in all. Through reset-answering NATs most punches
#: get through in tens of ms or not for a long time, so a fresh start beats waiting.
PUNCH_ROUND = 0.5
#: A round in which every attempt so far was answered by a reset ends after RESET_ROUND
#: seconds or RESET_ROUND_RTTS of the slowest such answer, whichever is longer: the two
#: sides' SYNs cross mostly in the first few milliseconds, while both have just been
#: woken by the server's reply; later, a fresh pairing (a new start) beats waiting.
RESET_ROUND = 0.05
RESET_ROUND_RTTS = 20
#: How long a side waits at the server for its peer to come back after a failed round
#: or check (both notice within about a round of each other).
REPAIR_WAIT = 2.0
#: Link check (see fmi_client.linkcheck): bytes each way, and how long it may take.
VERIFY_BYTES = 65536
VERIFY_WINDOW = 2.0
RELAY_MODES = ("auto", "never", "always")
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


def _relayed(
    shared: tuple[str, Endpoint, Endpoint],
    server: tuple[str, int],
    deadline: float,
    credential: str | None,
    link: LinkInfo,
    cause: BaseException | None,
) -> socket.socket:
    """The link through the server's relay, under the session of the rendezvous ``shared``
    (its name and both public endpoints: the peer computes the same session id)."""
    pname, ours, theirs = shared
    session = pairing_session(pname.encode(), ours, theirs)
    log.info("pairing %r: going through the relay of %s:%d", pname, *server)
    try:
        sock = relay_connect(
            pname, server[0], server[1], deadline,
            credential=credential.encode() if credential else None, session=session,
        )  # fmt: skip
    except RelayRefused as exc:
        if cause is not None:
            exc.add_note(f"the relay was the fallback after: {cause}")
        raise
    link.path = "relay"
    return sock


def _round_name(name: str, pairing: int, protocol: str) -> str:
    """The pairing name of re-pairing number ``pairing`` (0: the caller's name). Both sides
    count their re-pairings alike, so they meet again without talking it over; a name
    that has no room for the suffix is reused as it is."""
    if pairing == 0:
        return name
    candidate = f"{name}~{pairing}"
    try:
        exchange_for(candidate, protocol)
    except ProtocolError:
        return name
    return candidate


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): nothing of a failed link lingers retransmitting."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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
    credential: str | None = None,
    verify_bytes: int = VERIFY_BYTES,
    verify_timeout: float = VERIFY_WINDOW,
    relay: str = "auto",
) -> PairedSocket:
    """A TCP socket connected to whoever else asks ``host:port`` to pair ``name``.

    ``timeout`` bounds everything (reaching the server, waiting for the peer, punching,
    checking); the punch gets at most ``punch_timeout`` of it, in rounds of PUNCH_ROUND
    between which both sides re-pair under ``name~1``, ``name~2``... ``protocol`` is "v2" (the
    fork's protocol, resumes after server timeouts) or "v1" (the original TCPunch, FMI's
    server; when it ends a long wait we rejoin until ``timeout``). Raises
    RendezvousUnreachable, RendezvousRefused (the server answered but turned the request
    down), PeerNeverArrived, PunchFailed or LinkCheckFailed (a PunchFailed); ValueError
    for a port outside 1..65535, an empty host or a v1 name with control characters. Safe
    to call from several threads at once; nothing is left open on any path but the result.

    Before the link is returned, both sides push ``verify_bytes`` (default 64 KiB) through
    it each way and acknowledge them (fmi_client.linkcheck); a link that has not done so
    within ``verify_timeout`` s is dropped and the pair re-paired until ``timeout``. Both
    sides need the same setting; ``verify_bytes=0`` turns the check off (needed to pair
    with the C++ TCPunch client). The result is a ``PairedSocket`` (a socket.socket) whose
    ``link`` attribute (a LinkInfo) tells the path, the final pairing name and any stall.

    ``relay`` ("auto", "never", "always") chooses the path. "never" only punches; "always"
    goes through the server's relay right after the rendezvous; "auto" (the default)
    punches and, where the punch cannot work (our NAT rewrote our port: symmetric) or has
    not worked by the end of ``punch_timeout``, or the peer stopped re-pairing, relays
    instead: both sides reach that point and use the session of the last rendezvous they
    shared (fmi_client.relay). ``link.path`` says "direct" or "relay"; the relay forwards
    bytes unread, so link checks (and authentication, when on) run end to end.

    With ``keepalive`` (the default) the socket sends TCP keepalive probes after
    ``keepalive_idle`` s of silence, every ``keepalive_interval`` s, and gives up after
    ``keepalive_count`` unanswered ones, so a peer that vanished (frozen, unplugged) makes a
    waiting recv() fail with an OSError (about 35 s with the defaults) instead of blocking
    forever. ``user_timeout`` (seconds, Linux TCP_USER_TIMEOUT, off by default) also
    bounds how long sent data may stay unacknowledged, but it then replaces
    ``keepalive_count`` and it resets the connection when the peer, alive, stops reading
    for that long with our data queued (a zero window): only set it above the longest
    pause of a peer that does not read.

    ``credential`` (default: $RENDEZVOUS_CREDENTIAL) is for servers started with an auth
    secret: minted by ``rendezvous credential --prefix P`` for a prefix of ``name``, sent
    with every v2 request (v1 cannot carry one: ValueError). A server that refuses it
    raises RendezvousRefused saying so.
    """
    if protocol not in ("v1", "v2"):
        raise ValueError(f"protocol must be 'v1' or 'v2', not {protocol!r}")
    if relay not in RELAY_MODES:
        raise ValueError(f"relay must be one of {RELAY_MODES}, not {relay!r}")
    if not isinstance(verify_bytes, int) or verify_bytes < 0:
        raise ValueError(f"verify_bytes must be a whole number >= 0, not {verify_bytes!r}")
    if verify_bytes and not verify_timeout > 0:
        raise ValueError(f"verify_timeout must be positive seconds, not {verify_timeout!r}")
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
    credential = resolve_credential(credential, protocol, name)
    try:
        exchange_for(name, protocol, credential)
    except ProtocolError as exc:
        if exc.reason is Reason.NAME_TOO_LONG:
            raise NameTooLong(
                f"pairing name {name!r} cannot be sent with {protocol}: {exc}"
            ) from exc
        raise ValueError(f"pairing name {name!r} cannot be sent with {protocol}: {exc}") from exc
    server = resolve(host, port, name)
    link = LinkInfo()
    failure: PunchFailed | None = None  # why the last pairing did not give a link
    punch_end: float | None = None  # end of the punch budget, from the first punch on
    shared: tuple[str, Endpoint, Endpoint] | None = None  # the last rendezvous (relay session)
    while True:
        pname = _round_name(name, link.pairings, protocol)
        wait_until = deadline if failure is None else min(deadline, time.monotonic() + REPAIR_WAIT)
        try:
            rv = meet(exchange_for(pname, protocol, credential), pname, server, wait_until, timeout)
        except PeerNeverArrived as exc:
            if failure is None:
                raise
            if relay == "never" or shared is None:
                raise failure from exc  # the peer did not come back to re-pair
            pname = shared[0]  # the peer relays under the last rendezvous both made
            sock = _relayed(shared, server, deadline, credential, link, failure)
        else:
            link.pairings += 1
            shared = (pname, rv.public, rv.peer)
            punched_at = time.monotonic()
            punch_end = punch_end or punched_at + punch_timeout
            try:
                if relay == "always":
                    sock = _relayed(shared, server, deadline, credential, link, None)
                else:
                    log.info(
                        "pairing %r: paired with %s; punching from %s", pname, rv.peer, rv.local
                    )
                    sock = _punch(rv, pname, min(deadline, punch_end, punched_at + PUNCH_ROUND))
            except PunchFailed as exc:
                link.punch_failures += 1
                link.problems.append(str(exc))
                now = time.monotonic()
                if rv.public.port == rv.local.port and now < min(deadline, punch_end):
                    log.info("pairing %r: punch round failed; re-pairing (%s)", pname, exc)
                    failure = exc
                    continue
                if relay == "never":
                    raise  # our NAT rewrote the port (symmetric), or no punch time left
                sock = _relayed(shared, server, deadline, credential, link, exc)
            finally:
                rv.sock.close()
            link.punch_s = time.monotonic() - punched_at
        punch_end = None
        try:
            if verify_bytes:
                checked_at = time.monotonic()
                verify_link(sock, verify_bytes, min(deadline, checked_at + verify_timeout))
                link.verify_s = time.monotonic() - checked_at
                link.verified_bytes = verify_bytes
            if liveness is not None:
                liveness.apply(sock)
        except CheckFailed as exc:
            _abort(sock)
            link.stalls += 1
            link.problems.append(str(exc))
            log.warning("pairing %r: link check failed, re-pairing: %s", pname, exc)
            failure = LinkCheckFailed(
                f"pairing {name!r}: the punched link to {rv.peer} failed its check: {exc}",
                stalled=exc.stalled,
            )
            if not exc.stalled or time.monotonic() >= deadline:
                raise failure from exc
            continue
        except BaseException:
            sock.close()
            raise
        link.name = pname
        return PairedSocket.adopt(sock, link)

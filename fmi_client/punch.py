"""pair(): meet a peer at a TCPunch rendezvous server, then punch a direct TCP connection.

The conversation with the server is :mod:`fmi_client.meet` (sockets around tcpunch's
sans-IO client exchange), the punch itself :mod:`fmi_client.simopen`, the relay path
:mod:`fmi_client.fallback` (over :mod:`fmi_client.relay`), the link check
:mod:`fmi_client.linkcheck`; this module holds pair(): rounds, re-pairing and the choice
of path. The rendezvous socket
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
import logging
import random
import socket
import struct
import threading
import time
from typing import Any

from fmi_client.address import DEFAULT_PORT, check_host, check_port
from fmi_client.credential import resolve_credential
from fmi_client.errors import LinkCheckFailed, NameTooLong, PeerNeverArrived, PunchFailed
from fmi_client.fallback import RELAY_CUT, RelayPeerMissing, relayed
from fmi_client.handshake import LinkSecret
from fmi_client.link import LinkInfo, PairedSocket
from fmi_client.linkcheck import CheckFailed, verify_link
from fmi_client.liveness import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, Liveness
from fmi_client.meet import exchange_for, meet, resolve
from fmi_client.natpath import (
    DEFAULT_DISCOVERY_PORT,
    FINDINGS,
    NAT_CHOICES,
    choose_path,
    findings,
    own_class,
    unhinted,
    with_findings,
)
from fmi_client.securelink import pair_securely, require_encryption
from fmi_client.simopen import punch as _punch
from tcpunch import V1_CONTROL_BYTES, Endpoint, NatClass, ProtocolError, Reason

log = logging.getLogger("fmi_client")

#: How long the punch phase may take once both sides are paired. Both learn about each
#: other at the same instant, so a punch that works takes a few round trips; a NAT that
#: blocks it will not start working later.
PUNCH_WINDOW = 3.0
#: One punch round: a punch that has not got through by then is given up and the pair
#: re-pairs under a fresh name (new ports, so new NAT mappings and a new start for the
#: retry grid), within ``punch_timeout`` in all. Through reset-answering NATs most punches
#: get through in tens of ms or not for a long time, so a fresh start beats waiting.
PUNCH_ROUND = 0.5
#: How long a side waits at the server for its peer to come back after a failed round
#: or check (both notice within about a round of each other).
REPAIR_WAIT = 2.0
#: Link check (see fmi_client.linkcheck): bytes each way, and how long it may take.
VERIFY_BYTES = 65536
VERIFY_WINDOW = 2.0
RELAY_MODES = ("auto", "never", "always")
#: After a failed link check, the first pause before re-pairing (doubling per failure,
#: jittered, at most REPAIR_BACKOFF_MAX): a link that keeps breaking at once (a relay
#: limit, a middlebox's reset) must not make the pair hammer the server until the deadline.
REPAIR_BACKOFF = 0.02
REPAIR_BACKOFF_MAX = 0.5


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


def pair_raw(
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
    nat: str = "auto",
    discovery_port: int | None = DEFAULT_DISCOVERY_PORT,
    cancel: threading.Event | None = None,
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

    Each side's NAT finding travels through the rendezvous (v2), so with "auto" a pair
    that cannot punch (either side port-dependent, or accepting no inbound connection)
    skips the punch and both sides relay at once (fmi_client.natpath has the table).
    ``nat`` is "auto" (found out: NAT discovery at ``discovery_port`` of the server,
    once per process, at most DISCOVERY_WINDOW s; None or 0: no probe; and a port the
    NAT rewrote at the rendezvous), or declared: "no-inbound" (this host accepts no
    inbound connection, punched or not), "port-dependent", "endpoint-independent".
    Hints are sent only to a server that answered the discovery probe (ours; with
    ``discovery_port=None`` none are sent, and a foreign v2 server gets today's bytes).
    ``link.nat``, ``link.peer_nat`` and ``link.why`` say what was known and why.

    ``cancel`` (a threading.Event), once set from another thread, ends a wait for the
    peer within a tenth of a second with PairingCancelled (a closed Communicator's
    background pairings use it, so they neither linger nor keep a waiting entry).

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
    if nat not in NAT_CHOICES:
        raise ValueError(f"nat must be one of {NAT_CHOICES}, not {nat!r}")
    discovery_port = check_port(discovery_port) if discovery_port else 0
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
    key = (server[0], server[1], discovery_port)
    ours, hints = own_class(nat, key, deadline)
    no_hints = unhinted(protocol, hints, discovery_port, nat)
    link = LinkInfo()
    failure: PunchFailed | None = None  # why the last pairing did not give a link
    punch_end: float | None = None  # end of the punch budget, from the first punch on
    shared: tuple[str, Endpoint, Endpoint] | None = None  # the last rendezvous (relay session)
    restart = 0  # link.pairings when we last started over under the caller's name
    while True:
        pname = _round_name(name, link.pairings - restart, protocol)
        wait_until = deadline if failure is None else min(deadline, time.monotonic() + REPAIR_WAIT)
        exchange = exchange_for(pname, protocol, credential, ours if hints else None)
        try:
            try:
                rv = meet(exchange, pname, server, wait_until, timeout, cancel)
            except PeerNeverArrived as exc:
                if failure is None:
                    if link.problems:  # we started over: say what happened before
                        exc.add_note(f"before that: {link.problems[-1]}")
                    raise
                if relay == "never" or shared is None:
                    raise failure from exc  # the peer did not come back to re-pair
                pname = shared[0]  # the peer relays under the last rendezvous both made
                link.why = f"relayed: the peer did not re-pair (it relays instead) after: {failure}"
                sock = relayed(shared, server, deadline, credential, link, failure, failure)
            else:
                link.pairings += 1
                shared = (pname, rv.public, rv.peer)
                if nat == "auto":
                    ours = FINDINGS.learned(key, rv.public, rv.local)
                theirs = rv.peer_nat if rv.peer_nat is not None else NatClass.UNKNOWN
                link.nat, link.peer_nat = ours.label, theirs.label
                choice = choose_path(relay, ours, theirs)
                unheard = (no_hints or "the server passes no hints") if rv.peer_nat is None else ""
                told = unheard and relay != "always"  # "always" needs no findings
                link.why = f"{choice.why}; {unheard}" if told else choice.why
                punched_at = time.monotonic()
                punch_end = punch_end or punched_at + punch_timeout
                try:
                    if choice.path == "relay":
                        log.info(
                            "pairing %r: paired with %s; %s: relaying", pname, rv.peer, link.why
                        )
                        sock = relayed(shared, server, deadline, credential, link, None, failure)
                    else:
                        log.info(
                            "pairing %r: paired with %s; punching from %s (%s)",
                            pname, rv.peer, rv.local, link.why.removeprefix("punch: "),
                        )  # fmt: skip
                        sock = _punch(rv, pname, min(deadline, punch_end, punched_at + PUNCH_ROUND))
                        link.path = "direct"  # an earlier round may have relayed
                except PunchFailed as exc:
                    exc = with_findings(exc, ours, theirs, unheard)
                    link.punch_failures += 1
                    link.problems.append(str(exc))
                    now = time.monotonic()
                    if rv.public.port == rv.local.port and now < min(deadline, punch_end):
                        log.info("pairing %r: punch round failed; re-pairing (%s)", pname, exc)
                        failure = exc
                        continue
                    if relay == "never":
                        raise exc from None  # our NAT rewrote the port, or no punch time left
                    known = (
                        f"our NAT {ours.label}; {unheard}" if unheard else findings(ours, theirs)
                    )
                    link.why = f"relayed after the punch failed ({known})"
                    sock = relayed(shared, server, deadline, credential, link, exc, failure)
                finally:
                    rv.sock.close()
                link.punch_s = time.monotonic() - punched_at
        except RelayPeerMissing as exc:
            # Gone, or a stranger who took the name and left: pair again under the
            # caller's name (where the real peer waits), as if from the start.
            link.problems.append(str(exc))
            log.warning("pairing %r: %s; pairing again as %r", pname, exc, name)
            restart, failure, shared, punch_end = link.pairings, None, None, None
            continue
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
            kind = "relayed" if link.path == "relay" else "punched"
            cut = kind == "relayed" and isinstance(exc.__cause__, ConnectionResetError)
            problem = f"{exc} ({RELAY_CUT})" if cut else str(exc)
            link.problems.append(problem)
            log.warning("pairing %r: link check failed, re-pairing: %s", pname, problem)
            failure = LinkCheckFailed(
                f"pairing {name!r}: the {kind} link to {rv.peer} failed its check: {problem}",
                stalled=exc.stalled,
            )
            if not exc.stalled or time.monotonic() >= deadline:
                raise failure from exc
            pause = min(REPAIR_BACKOFF * 2 ** (link.stalls - 1), REPAIR_BACKOFF_MAX)
            time.sleep(max(0.0, min(pause * random.uniform(0.5, 1.0), deadline - time.monotonic())))
            continue
        except BaseException:
            sock.close()
            raise
        link.name = pname
        return PairedSocket.adopt(sock, link)


def pair(
    name: str,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    timeout: float = 120.0,
    secret: str | bytes | LinkSecret | None = None,
    encrypt: bool = True,
    my_rank: int | None = None,
    peer_rank: int | None = None,
    **options: Any,
) -> socket.socket:
    """:func:`pair_raw` (every other keyword is its), secured when there is a job secret.

    ``secret`` (default: $FMI_SECRET) is known to the ranks of one job and not to the
    server. With one, both sides prove knowledge of it, bound to this pairing, both ranks
    and the TLS channel, before the socket is returned (fmi_client.handshake), and the
    link is TLS 1.3 unless ``encrypt=False`` (needs the `crypto` extra). ``my_rank`` and
    ``peer_rank`` are then required (the lower rank is the TLS server; both are in the
    proof; for two parties use 0 and 1). A peer that fails the proof (a stranger who took
    the name first) is dropped and the pairing retried until ``timeout``; then
    PeerAuthenticationFailed names the pairing. Without a secret this is pair_raw().
    """
    link_secret = secret if isinstance(secret, LinkSecret) else None
    if isinstance(secret, (str, bytes)):
        link_secret = LinkSecret(secret)
    elif secret is None:
        link_secret = LinkSecret.from_environ()
    if link_secret is None:
        return pair_raw(name, host, port, timeout=timeout, **options)
    if my_rank is None or peer_rank is None or my_rank == peer_rank:
        raise ValueError(
            "pair() with a job secret needs my_rank and peer_rank, two different ranks (the "
            "lower one is the TLS server and both are in the proof); two parties: 0 and 1"
        )
    if encrypt:
        require_encryption()
    return pair_securely(
        lambda left: pair_raw(name, host, port, timeout=left, **options),
        secret=link_secret,
        pairing=name,
        my_rank=my_rank,
        peer_rank=peer_rank,
        encrypt=encrypt,
        deadline=time.monotonic() + timeout,
    )

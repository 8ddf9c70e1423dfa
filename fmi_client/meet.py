"""Meeting the peer at a TCPunch rendezvous server: blocking sockets around tcpunch's
sans-IO ``ClientExchange``.

The exchange knows the conversation (what to send, what the replies mean, when to
resume with a token or rejoin). This module owns what it cannot: sockets, the caller's
deadline, pauses between retries, and turning what happened into fmi_client's errors,
with messages that say what to try.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

from fmi_client.credential import credential_refused
from fmi_client.errors import (
    PairingCancelled,
    PeerNeverArrived,
    RendezvousRefused,
    RendezvousUnreachable,
)
from tcpunch import (
    ClientExchange,
    Endpoint,
    Event,
    NatClass,
    OwnEndpoint,
    Paired,
    Reason,
    RemoteProtocolError,
    ServerClosed,
    ServerError,
    TimedOut,
    V1Request,
    V2Request,
    Waiting,
    encode_v1_name,
    hint_flags,
)

log = logging.getLogger("fmi_client")

#: Pause between attempts to reach a server that refuses connections (it may be starting).
SERVER_RETRY_FIRST = 0.05
SERVER_RETRY_CAP = 1.0
#: A v1 wait the server ended is rejoined only if at least this much of the deadline is left.
MIN_REJOIN = 0.05
#: Bytes asked of one recv(): a reply is 8 (v1) or 51 (v2) bytes; the exchange frames them.
_RECV_SIZE = 4096
#: How often a cancellable wait for the peer looks at its cancel event (seconds).
CANCEL_POLL = 0.1


@dataclass
class Meeting:
    """The rendezvous connection once the server reported the peer (kept open until the
    punch is done, so our local port's NAT mapping stays)."""

    sock: socket.socket
    local: Endpoint  # our socket's real address
    public: Endpoint  # how the server saw us
    peer: Endpoint  # the peer's public endpoint, as the server saw it
    peer_nat: NatClass | None = None  # the peer's NAT class, if the server passed it


def exchange_for(
    name: str, protocol: str, credential: str | None = None, nat: NatClass | None = None
) -> ClientExchange:
    """The exchange for ``name``; LocalProtocolError if the name does not fit ``protocol``.

    ``nat`` (v2): report our NAT class and ask for the peer's (tcpunch.nathint)."""
    if protocol == "v1":
        return ClientExchange(V1Request(encode_v1_name(name)))
    flags = 0 if nat is None else hint_flags(nat)
    return ClientExchange(V2Request(name, flags=flags, credential=credential))


def reuse_socket() -> socket.socket:
    """A TCP socket with SO_REUSEADDR and SO_REUSEPORT, so the punch can share its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def resolve(host: str, port: int, name: str) -> tuple[str, int]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise RendezvousUnreachable(
            f"cannot resolve the rendezvous host {host!r} for pairing {name!r}: {exc}; "
            "check the host name (TCPunch servers speak IPv4)"
        ) from exc
    ip, resolved_port = infos[0][4][:2]
    return str(ip), int(resolved_port)


def _connect_server(server: tuple[str, int], name: str, deadline: float) -> socket.socket:
    """A connected rendezvous socket; retries refused connections until the deadline."""
    pause = SERVER_RETRY_FIRST
    while True:
        sock = reuse_socket()
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


def _next_events(
    sock: socket.socket,
    exchange: ClientExchange,
    deadline: float,
    cancel: threading.Event | None = None,
) -> tuple[list[Event], str]:
    """Feed the exchange until it has events; the events and, for a close, its words.

    TimeoutError at the deadline; PairingCancelled within CANCEL_POLL of ``cancel`` being
    set (the long wait for a peer is where a closed Communicator's pairing would sit).
    A reset counts as the server closing.
    """
    while True:
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise TimeoutError
        if cancel is not None and cancel.is_set():
            raise PairingCancelled("the pairing was called off (its communicator was closed)")
        sock.settimeout(remaining if cancel is None else min(remaining, CANCEL_POLL))
        try:
            chunk = sock.recv(_RECV_SIZE)
        except TimeoutError:
            if cancel is None:
                raise
            continue  # the deadline and the cancel are checked at the top
        except ConnectionError as exc:
            closed = exchange.receive_eof()
            return [closed], f"{exc} after {closed.received} of {closed.expected} bytes"
        if not chunk:
            closed = exchange.receive_eof()
            return [closed], f"EOF after {closed.received} of {closed.expected} bytes"
        events = exchange.receive_data(chunk)
        if events:
            return events, ""


def _check_nothing_follows(sock: socket.socket, exchange: ClientExchange) -> None:
    """Bytes already waiting after the peer's endpoint go to the exchange (which refuses
    them: a rendezvous server closes after pairing). Nothing yet, EOF or a reset are fine."""
    sock.setblocking(False)
    try:
        extra = sock.recv(_RECV_SIZE, socket.MSG_PEEK)
    except OSError:  # nothing yet (EAGAIN), or a reset: neither makes the reply wrong
        return
    if extra:
        exchange.receive_data(extra)


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
        f"({what}). Likely reasons: it requires a credential (started with an auth secret: "
        "pass credential= or set RENDEZVOUS_CREDENTIAL, protocol v2; v1 names only if they "
        "match its --allow-v1); its --name-pattern does not match this name; this IP "
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


def _bad_reply(
    name: str, server: tuple[str, int], protocol: str, exc: RemoteProtocolError
) -> RendezvousUnreachable:
    """What bytes no TCPunch server sends say about the far end (classified by reason)."""
    if exc.reason is Reason.HTTP_REPLY:
        return _http_port(name, server)
    if protocol == "v1":
        return _garbage(name, server, str(exc))
    return RendezvousUnreachable(
        f"pairing {name!r}: the server {server[0]}:{server[1]} sent an invalid v2 "
        f"response ({exc}); is it a TCPunch v2 server? Try protocol='v1'."
    )


def _final_close(
    name: str, server: tuple[str, int], protocol: str, closed: ServerClosed, why: str
) -> Exception:
    """The error for a close the exchange cannot resume."""
    if closed.replies == 0 and closed.received == 0:
        # A close before any byte is how servers refuse (caps, junk names, policies).
        return _refused(name, server, f"it closed the connection: {why}")
    if protocol == "v1" and closed.replies == 1:
        return _garbage(name, server, f"a partial peer endpoint: {why}")
    return _lost_server(name, server, why)


#: How one connection's part of the exchange ended, when the exchange goes on.
Resumable = TimedOut | ServerError | ServerClosed


def _converse(
    sock: socket.socket,
    exchange: ClientExchange,
    request: bytes,
    name: str,
    server: tuple[str, int],
    deadline: float,
    cancel: threading.Event | None = None,
) -> tuple[Paired | Resumable, str]:
    """Send ``request`` and read until the peer is reported or this connection's part
    ends in a way the exchange can resume; the event and, for a close, its words. A
    final end raises fmi_client's error; TimeoutError at the deadline."""
    protocol = exchange.protocol
    events: list[Event] = []
    why = ""
    try:
        sock.sendall(request)
    except ConnectionError as exc:
        if protocol == "v1":
            raise _lost_server(name, server, f"sending the name: {exc}") from None
        events, why = [exchange.receive_eof()], str(exc)
    if protocol == "v1":
        log.info("pairing %r: waiting at %s:%d (v1)", name, *server)
    try:
        while True:
            if not events:
                events, why = _next_events(sock, exchange, deadline, cancel)
            for event in events:
                if isinstance(event, Waiting):
                    log.info("pairing %r: waiting for the peer at %s:%d", name, *server)
                elif isinstance(event, Paired):
                    _check_nothing_follows(sock, exchange)
                    return event, why
                elif isinstance(event, TimedOut):
                    log.info("pairing %r: server timed out the wait; resuming", name)
                    return event, why
                elif isinstance(event, ServerError):
                    if not event.resumable:
                        if exchange.carries_credential:
                            raise credential_refused(name, server)
                        raise _refused(name, server, "it answered ERROR to a fresh v2 request")
                    return event, why  # a stale token: start over without it
                elif isinstance(event, ServerClosed):
                    if not event.resumable:
                        raise _final_close(name, server, protocol, event, why)
                    return event, why
                else:
                    assert isinstance(event, OwnEndpoint)  # v1: the peer's endpoint is next
            events = []
    except RemoteProtocolError as exc:
        raise _bad_reply(name, server, protocol, exc) from exc


def meet(
    exchange: ClientExchange,
    name: str,
    server: tuple[str, int],
    deadline: float,
    timeout: float,
    cancel: threading.Event | None = None,
) -> Meeting:
    """Wait at ``server`` until the peer asking for ``name`` is reported, resuming (v2:
    with the token; v1: rejoining when the server ends a wait) until ``deadline``.

    ``exchange``: a fresh one from :func:`exchange_for`; ``timeout`` is only quoted in
    the PeerNeverArrived message; ``cancel``, once set, ends the wait with
    PairingCancelled."""
    protocol = exchange.protocol
    request = exchange.start()
    expiries = 0  # v1: waits the server ended
    pause = SERVER_RETRY_FIRST
    while True:
        sock = _connect_server(server, name, deadline)
        joined = time.monotonic()
        try:
            local = Endpoint(*sock.getsockname()[:2])
            outcome, why = _converse(sock, exchange, request, name, server, deadline, cancel)
        except TimeoutError:
            sock.close()
            raise _never_arrived(name, server, timeout, expiries) from None
        except PairingCancelled:
            sock.close()  # our waiting entry on the server goes with it
            raise PairingCancelled(
                f"pairing {name!r}: called off while waiting at {server[0]}:{server[1]} "
                "(its communicator was closed)"
            ) from None
        except BaseException:
            sock.close()
            raise
        if isinstance(outcome, Paired):
            return Meeting(sock, local, outcome.you, outcome.peer, outcome.peer_nat)
        sock.close()
        if isinstance(outcome, ServerClosed) and protocol == "v1":
            # The server ended our wait (its v1 wait limit): rejoin under the same name.
            expiries += 1
            waited = time.monotonic() - joined
            short = waited < SERVER_RETRY_CAP  # a server that ends waits at once: no hammering
            if _remaining(deadline) <= (pause if short else 0) + MIN_REJOIN:
                raise _never_arrived(name, server, timeout, expiries)
            log.info(
                "pairing %r: the v1 server ended our wait after %.1f s; rejoining", name, waited
            )
            if short:
                time.sleep(pause)
                pause = min(pause * 2, SERVER_RETRY_CAP)
            else:
                pause = SERVER_RETRY_FIRST
        elif isinstance(outcome, ServerClosed):
            # v2: the connection broke while the server held our token: resume with it.
            if _remaining(deadline) <= pause:
                raise _lost_server(name, server, why)
            time.sleep(pause)
            pause = min(pause * 2, SERVER_RETRY_CAP)
        elif _remaining(deadline) <= 0:  # v2 TIMEOUT, or ERROR to a stale token
            raise _never_arrived(name, server, timeout)
        request = exchange.resume()

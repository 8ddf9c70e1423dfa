"""One rendezvous connection as an ``asyncio.Protocol``, with its states in one table.

A connection is accepted, reads one request, is dispatched (answered at once, or parked
as a waiter), and closes. Which state follows which event is written down once, in
``TRANSITIONS`` (:mod:`rendezvous.connection_states`, as h11's ``_state.py`` does);
``Connection._apply`` is the only place that changes ``state``. An event the table does
not list for a state is a bug of ours and raises. New kinds of connections (a relay
session) or new ways to end (like VANISH: a probe reset before ``connection_made`` could
read its address) are new rows there and new handlers in :mod:`rendezvous.dispatch`.

No streams and no timer per connection: a pairing must cost well under 60 us of CPU.
Deadlines live in :mod:`rendezvous.deadlines`; decisions in :mod:`rendezvous.dispatch`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from rendezvous.connection_states import (
    ARRIVING,
    CLOSED,
    DISPATCHING,
    NEW,
    NEXT,
    PROXY_HEADER,
    READING,
    TRANSITIONS,
    WAITING,
    Event,
    InvalidTransition,
    State,
)
from rendezvous.proxy_protocol import Parsed, ProxyHeaderReader, ProxyProtocolError, ProxyReason
from rendezvous.room import ProtocolVersion, Waiter
from tcpunch import (
    Endpoint,
    NeedMoreData,
    ProtocolError,
    Reason,
    Status,
    V2Response,
    encode_v2_response,
    pack_endpoint,
)
from tcpunch.relay import ServerRequestReader

if TYPE_CHECKING:
    from rendezvous.dispatch import Dispatcher
    from tcpunch.request import _NeedMoreData

log = logging.getLogger("rendezvous")

# Re-exported: the states live in rendezvous.connection_states; callers import them here.
__all__ = [
    "ARRIVING",
    "CLOSED",
    "DISPATCHING",
    "NEW",
    "PROXY_HEADER",
    "READING",
    "TRANSITIONS",
    "WAITING",
    "Connection",
    "Event",
    "InvalidTransition",
    "State",
]

# The events and the compiled table as module globals, as they were when defined here:
# ``Event.ACCEPT`` is a descriptor lookup and the per-connection path applies several.
_ACCEPT = Event.ACCEPT
_REFUSE = Event.REFUSE
_REQUEST = Event.REQUEST
_PARK = Event.PARK
_ANSWER = Event.ANSWER
_LOST = Event.LOST
_ABORT = Event.ABORT
_HAND_OFF = Event.HAND_OFF
_VANISH = Event.VANISH
_EXPECT_PROXY = Event.EXPECT_PROXY
_HEADER = Event.HEADER
_DEFER = Event.DEFER
_NEXT = NEXT


class Connection(asyncio.Protocol):
    """One rendezvous connection: reads a request, then waits or pairs, then closes."""

    __slots__ = (
        "dispatcher",
        "endpoint",
        "flags",
        "head",
        "packed",
        "protocol",
        "proxy",
        "proxy_bytes",
        "reader",
        "state",
        "transport",
        "waiter",
    )

    endpoint: Endpoint
    reader: ServerRequestReader
    transport: asyncio.Transport

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = NEW
        self.waiter: Waiter[Connection] | None = None
        self.protocol: ProtocolVersion = "v1"
        self.flags = 0  # a v2 request's flags (NAT hints); 0 for v1
        self.head = b""
        self.packed: bytes | None = None

    def _apply(self, event: Event) -> State:
        """Move to the state the table gives for ``event``; returns the state left.

        Leaving READING or WAITING takes the connection off that state's deadlines.
        """
        old = self.state
        new = _NEXT[event][old]
        if new is None:
            raise InvalidTransition(f"{event.name} is not allowed in {old.name}")
        self.state = new
        if old is READING:
            self.dispatcher.deadlines.reading.pop(self, None)
        elif old is WAITING:
            self.dispatcher.deadlines.untrack_waiter(self)
        elif old is PROXY_HEADER and new is not READING:
            self.dispatcher.deadlines.reading.pop(self, None)
        return old

    # -- asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if TYPE_CHECKING:  # a stream transport; no isinstance on the hot path
            assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        dispatcher = self.dispatcher
        peer = transport.get_extra_info("peername")
        if peer is None:  # uvloop: reset between accept() and here (scanners, probes)
            self.endpoint = _ZERO
            self._apply(_VANISH)
            dispatcher.refuse_unread(self, "reset", "the connection was reset at once")
            transport.abort()
            return
        ip = peer[0]
        if ":" in ip and ip.startswith("::ffff:"):
            ip = ip[7:]
        self.endpoint = _new_endpoint(Endpoint, (ip, peer[1]))
        connections = dispatcher.connections
        if len(connections) >= dispatcher.max_connections:
            self._apply(_REFUSE)
            dispatcher.refuse_unread(
                self, "connection_cap", "the server's connection cap is reached"
            )
            transport.abort()
            return
        if ":" in ip:
            self._apply(_REFUSE)
            dispatcher.refuse_unread(self, "not_ipv4", "TCPunch carries IPv4 endpoints only")
            transport.abort()
            return
        connections.add(self)
        if dispatcher.proxy_protocol:
            self._apply(_EXPECT_PROXY)
            self.proxy = ProxyHeaderReader()
            self.proxy_bytes = 0
        else:
            self._apply(_ACCEPT)
        dispatcher.deadlines.reading[self] = dispatcher.time() + dispatcher.request_timeout
        self.reader = ServerRequestReader()

    def data_received(self, data: bytes) -> None:
        if self.state is not READING:
            if self.state is PROXY_HEADER:
                self._proxy_data(data)
            return  # clients send nothing after their request; ignore, never buffer
        # ``head`` (for telling v1 from v2 in refusals) only matters for requests that
        # are not complete after this read: remembered then, not on the common path.
        try:
            request = self.reader.feed(data)
        except ProtocolError as exc:
            self._remember_head(data)
            self._bad_request(exc)
            return
        if request is NeedMoreData:
            self._remember_head(data)
            return
        if TYPE_CHECKING:  # narrowed by the ``is`` above, which mypy cannot see
            assert not isinstance(request, _NeedMoreData)
        self._apply(_REQUEST)
        dispatcher = self.dispatcher
        try:
            dispatcher.dispatch(self, request)
        except Exception:  # the server never dies of one request
            log.exception("internal error", extra={"event": "internal_error"})
            dispatcher.metrics.reject("internal_error")
            if self.waiter is not None:
                dispatcher.abandoned(self)
            self.finish(error=True)

    def eof_received(self) -> bool:
        return False  # close our side too: a client that hung up cannot be answered

    def connection_lost(self, exc: Exception | None) -> None:
        dispatcher = self.dispatcher
        dispatcher.connections.discard(self)
        if self.state is CLOSED:  # the common case, we closed it: (CLOSED, LOST) is a no-op
            self.waiter = None
            return
        left = self._apply(_LOST)
        if left is READING:
            if self.reader.buffered:
                dispatcher.refuse_unread(self, "incomplete", str(self.reader.eof()))
            elif isinstance(exc, OSError):  # asyncio: a reset before any byte
                dispatcher.refuse_unread(self, "reset", "the connection was reset at once")
            else:
                dispatcher.refuse_unread(self, "empty", "the connection closed without a request")
        elif left is WAITING:
            dispatcher.abandoned(self)
        elif left is PROXY_HEADER:
            if self.proxy_bytes:
                reason = ProxyReason.CLOSED
                dispatcher.refuse_unread(self, reason.value, "closed inside the PROXY header")
            else:
                dispatcher.refuse_unread(self, "empty", "the connection closed without a request")
        self.waiter = None

    # -- helpers ---------------------------------------------------------------------

    @property
    def v1_reply(self) -> bytes:
        """This connection's endpoint as the 8-byte v1 reply (packed once)."""
        packed = self.packed
        if packed is None:
            packed = self.packed = pack_endpoint(*self.endpoint)
        return packed

    def _proxy_data(self, data: bytes) -> None:
        """Bytes before the request behind a balancer: its PROXY v2 header names the
        client; what followed it in the same read is the request's first read."""
        self.proxy_bytes += len(data)
        try:
            parsed = self.proxy.feed(data)
        except ProxyProtocolError as exc:
            self.dispatcher.refuse_unread(self, exc.proxy_reason.value, str(exc))
            self.finish()
            return
        if parsed is NeedMoreData:
            return
        if TYPE_CHECKING:
            assert isinstance(parsed, Parsed)
        header = parsed.header
        if header.command == "local":  # the balancer's own health check
            self.finish()
            return
        endpoint = header.client_endpoint()
        if endpoint is None and header.source is not None:
            self.dispatcher.refuse_unread(
                self, "not_ipv4", "the PROXY header names an IPv6 client; TCPunch is IPv4"
            )
            self.finish()
            return
        if endpoint is not None:  # else UNSPEC/UNIX: the socket's peer stands
            self.endpoint = endpoint
        self._apply(_HEADER)
        if parsed.rest:
            self.data_received(parsed.rest)

    def _remember_head(self, data: bytes) -> None:
        if len(self.head) < 100:
            self.head = (self.head + data)[:100]

    @property
    def looks_v2(self) -> bool:
        return b"\0" in self.head

    def _bad_request(self, exc: ProtocolError) -> None:
        if self.looks_v2:
            self.protocol = "v2"
        reason = _REFUSAL_REASONS.get(exc.reason, "malformed")
        self.dispatcher.refuse_unread(self, reason, str(exc))
        self.finish(error=True)

    def request_timed_out(self, *, drained: float | None = None) -> None:
        """Refuse a request still incomplete at its deadline, or at the end of a drain
        (``drained``: the drain's timeout), so the log says which of the two cut it off."""
        if self.state is not READING and self.state is not PROXY_HEADER:
            return
        self.protocol = "v2" if self.looks_v2 else "v1"
        dispatcher = self.dispatcher
        if drained is not None:
            dispatcher.refuse_unread(
                self,
                "drain",
                f"request still incomplete when the drain ended after {drained:g} s "
                f"({self.reader.buffered} bytes); the server is shutting down",
            )
        else:
            dispatcher.refuse_unread(
                self,
                "request_timeout",
                f"no complete request within {dispatcher.request_timeout:g} s "
                f"({self.reader.buffered} bytes)",
            )
        self.finish(error=True)

    def send_v2(self, status: Status, token: str | None = None) -> None:
        """A v2 response without a peer (WAITING, ERROR)."""
        response = V2Response(status, self.endpoint, _ZERO, token or "")
        self.transport.write(encode_v2_response(response))

    def finish(self, *, error: bool = False, payload: bytes | None = None) -> None:
        """Answer (ERROR for v2 when ``error``) and close; the connection is done."""
        self._apply(_ANSWER)
        transport = self.transport
        if transport.is_closing():
            return
        if payload is not None:
            transport.write(payload)
        elif error and self.protocol == "v2":
            self.send_v2(Status.ERROR)
        transport.close()

    def lost(self) -> State:
        """Its transport is closing under us (connection_lost will follow); returns the
        state it left."""
        return self._apply(_LOST)

    def abort(self) -> State:
        """Close at once without an answer (the server stops); returns the state left."""
        left = self._apply(_ABORT)
        self.transport.abort()
        return left

    def expire(self, *, drained: bool = False) -> None:
        """The waiter's time is up (or the drain ends, ``drained``): TIMEOUT (v2, may
        resume with its token) or close."""
        if self.state is not WAITING:
            return
        waiter = self.waiter
        self.dispatcher.expired(self, drained=drained)
        payload = None
        if self.protocol == "v2" and waiter is not None:
            payload = encode_v2_response(
                V2Response(Status.TIMEOUT, self.endpoint, _ZERO, waiter.token or "")
            )
        self.finish(payload=payload)

    def hand_off(self) -> asyncio.Transport:
        """The relay takes this connection's transport over; the rendezvous side is done."""
        self._apply(_HAND_OFF)
        self.dispatcher.connections.discard(self)
        return self.transport

    def defer(self) -> None:
        """The shared room decides in a task; the connection waits for its outcome."""
        self._apply(_DEFER)

    def park(self, waiter: Waiter[Connection]) -> None:
        """Dispatch made it a waiter (the caller sets its deadline)."""
        self._apply(_PARK)
        self.waiter = waiter


# Refusal reasons (metric labels) by the codec's reason code; every other code is "malformed".
_REFUSAL_REASONS = {Reason.OVERSIZED: "oversized", Reason.NOT_UTF8: "not_utf8"}

_ZERO = Endpoint("0.0.0.0", 0)
_new_endpoint = tuple.__new__  # Endpoint(ip, port) without NamedTuple's Python __new__

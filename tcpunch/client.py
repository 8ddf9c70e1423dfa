"""The client side of one rendezvous, sans IO: bytes in, events out, bytes out.

``ClientExchange(V1Request(b"name"))`` or ``ClientExchange(V2Request("name"))`` knows
the whole conversation, across the connections it may take: ``start()`` gives the first
request's bytes; ``receive_data(chunk)`` turns the server's bytes (split anyhow) into
events (:mod:`tcpunch.client_events`); ``receive_eof()`` reports the server's close;
``resume()`` gives the bytes to send on a new connection after a resumable end (v1: the
server ended our wait, rejoin; v2: TIMEOUT, a close while a token is known, or ERROR to a
stale token). A ``V2Request`` built with ``credential=`` sends it on every request, the
first and each resume; one built with NAT hint flags (``tcpunch.nathint.hint_flags``)
reports its class on each and gets the peer's in ``Paired.peer_nat``. Sockets,
deadlines and retry pauses stay with the caller (``fmi_client.meet`` over blocking
sockets). Where the conversation goes is decided by the tables in
:mod:`tcpunch.client_state`. Bytes no TCPunch server sends raise RemoteProtocolError
(``.reason`` says which rule); calls out of order raise LocalProtocolError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tcpunch.client_events import (
    Event,
    OwnEndpoint,
    Paired,
    ServerClosed,
    ServerError,
    TimedOut,
    Waiting,
)
from tcpunch.client_state import (
    FORGETS_TOKEN,
    RESUMABLE,
    V1_TRANSITIONS,
    V2_TRANSITIONS,
    ClientState,
    Trigger,
    next_state,
)
from tcpunch.endpoint import ENDPOINT_SIZE, Endpoint, unpack_endpoint
from tcpunch.errors import LocalProtocolError, Reason, RemoteProtocolError
from tcpunch.request import V1Request
from tcpunch.v2 import NO_TOKEN, V2_RESPONSE_SIZE, Status, V2Request, decode_v2_response

_HTTP = b"HTTP/"

#: v2 status (and whether a token is known, which only matters for ERROR) -> trigger.
_V2_TRIGGERS: Mapping[tuple[Status, bool], Trigger] = {
    (Status.WAITING, False): Trigger.WAITING,
    (Status.WAITING, True): Trigger.WAITING,
    (Status.PAIRED, False): Trigger.PAIRED,
    (Status.PAIRED, True): Trigger.PAIRED,
    (Status.TIMEOUT, False): Trigger.TIMEOUT,
    (Status.TIMEOUT, True): Trigger.TIMEOUT,
    (Status.ERROR, False): Trigger.ERROR,
    (Status.ERROR, True): Trigger.ERROR_WITH_TOKEN,
}

#: A close: (part of a reply had arrived, a token is known) -> trigger.
_EOF_TRIGGERS: Mapping[tuple[bool, bool], Trigger] = {
    (False, False): Trigger.EOF,
    (True, False): Trigger.EOF_MID_REPLY,
    (False, True): Trigger.EOF_WITH_TOKEN,
    (True, True): Trigger.EOF_WITH_TOKEN,
}

#: Bytes after the reply that ended a connection's part of the exchange, by protocol.
_TRAILING = {
    "v1": "more than two 8-byte endpoints",
    "v2": "bytes after a response that ends the exchange",
}


class ClientExchange:
    """One client's rendezvous conversation (v1 or v2, by the request's type)."""

    __slots__ = (
        "_buffer",
        "_open",
        "_parsers",
        "_protocol",
        "_replies",
        "_reply_size",
        "_request",
        "_state",
        "_table",
        "_token",
        "_you",
    )

    def __init__(self, request: V1Request | V2Request) -> None:
        self._parsers: Mapping[ClientState, Callable[[bytes], Event]]
        if type(request) is V1Request:
            self._protocol = "v1"
            self._table = V1_TRANSITIONS
            self._reply_size = ENDPOINT_SIZE
            self._parsers = {
                ClientState.AWAIT_ENDPOINT: self._own_endpoint,
                ClientState.AWAIT_PEER: self._peer_endpoint,
            }
            self._token = NO_TOKEN
        elif type(request) is V2Request:
            self._protocol = "v2"
            self._table = V2_TRANSITIONS
            self._reply_size = V2_RESPONSE_SIZE
            self._parsers = {ClientState.AWAIT_RESPONSE: self._v2_response}
            self._token = request.token
        else:
            raise LocalProtocolError(
                f"a ClientExchange takes a V1Request or V2Request, not {type(request).__name__}",
                Reason.WRONG_TYPE,
            )
        self._request = request
        self._state = ClientState.IDLE
        self._buffer = bytearray()
        self._open = False  # a connection is under way: data and EOF may come
        self._replies = 0  # complete replies on the current connection
        self._you: Endpoint | None = None

    # -- what the caller reads -----------------------------------------------------

    @property
    def protocol(self) -> str:
        """``"v1"`` or ``"v2"``."""
        return self._protocol

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def token(self) -> str:
        """The v2 reconnect token known so far (``NO_TOKEN`` if none; always so in v1)."""
        return self._token

    @property
    def you(self) -> Endpoint | None:
        """Our endpoint as the server last reported it (None before its first reply)."""
        return self._you

    @property
    def carries_credential(self) -> bool:
        """Whether every request (first and each resume) carries a credential (v2 only):
        then an ERROR most likely means the server refused it."""
        request = self._request
        return type(request) is V2Request and request.credential is not None

    @property
    def resumable(self) -> bool:
        return self._state in RESUMABLE

    # -- bytes out -----------------------------------------------------------------

    def start(self) -> bytes:
        """The first request, to send on a fresh connection."""
        self._fire(Trigger.SEND)
        return self._new_connection()

    def resume(self) -> bytes:
        """The request to send on a new connection after a resumable end (the previous
        connection is to be closed: nothing more is read from it)."""
        self._fire(Trigger.RESUME)
        return self._new_connection()

    # -- bytes in ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """The events the server's bytes complete (none while a reply is partial)."""
        self._check_open("receive data")
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        size = self._reply_size
        try:
            while buffer:
                parse = self._parsers.get(self._state)
                if parse is None:
                    raise RemoteProtocolError(
                        f"{_TRAILING[self._protocol]}: {len(buffer)} bytes in state "
                        f"{self._state.name}",
                        Reason.TRAILING_BYTES,
                    )
                if len(buffer) < size:
                    break
                reply = bytes(buffer[:size])
                del buffer[:size]
                events.append(parse(reply))
                self._replies += 1
        except RemoteProtocolError:
            # As h11 does: after bad bytes the exchange is over; later calls are misuse.
            self._state = ClientState.FAILED
            self._open = False
            buffer.clear()
            raise
        return events

    def receive_eof(self) -> ServerClosed:
        """The server closed the connection (the caller reports a reset the same way)."""
        self._check_open("receive EOF")
        self._open = False
        received = len(self._buffer)
        expected = self._reply_size if self._state in self._parsers else 0
        self._fire(_EOF_TRIGGERS[received > 0, self._token != NO_TOKEN])
        self._buffer.clear()
        return ServerClosed(received, expected, self._replies, self.resumable)

    # -- internals -----------------------------------------------------------------

    def _fire(self, trigger: Trigger) -> None:
        self._state = next_state(self._table, self._state, trigger)
        if self._state in FORGETS_TOKEN:
            self._token = NO_TOKEN

    def _check_open(self, what: str) -> None:
        if not self._open:
            raise LocalProtocolError(
                f"cannot {what}: no connection under way in state {self._state.name} "
                "(call start() or resume() first; after receive_eof() nothing more comes)",
                Reason.OUT_OF_ORDER,
            )

    def _new_connection(self) -> bytes:
        self._open = True
        self._buffer.clear()
        self._replies = 0
        request = self._request
        if type(request) is V1Request:
            return request.name
        assert type(request) is V2Request
        return V2Request(request.name, self._token, request.flags, request.credential).encode()

    def _own_endpoint(self, reply: bytes) -> Event:
        if reply.startswith(_HTTP):
            raise RemoteProtocolError("the far end answered HTTP", Reason.HTTP_REPLY)
        you = unpack_endpoint(reply)
        if you.port == 0:
            raise RemoteProtocolError(f"our own endpoint {you} has port 0", Reason.BAD_ENDPOINT)
        self._fire(Trigger.OWN_ENDPOINT)
        self._you = you
        return OwnEndpoint(you)

    def _peer_endpoint(self, reply: bytes) -> Event:
        peer = unpack_endpoint(reply)
        if peer.port == 0 or peer.ip == "0.0.0.0":
            raise RemoteProtocolError(f"peer endpoint {peer}", Reason.BAD_ENDPOINT)
        self._fire(Trigger.PEER_ENDPOINT)
        assert self._you is not None  # AWAIT_PEER is only reached through OWN_ENDPOINT
        return Paired(self._you, peer)

    def _v2_response(self, reply: bytes) -> Event:
        if reply.startswith(_HTTP):
            raise RemoteProtocolError("the far end answered HTTP", Reason.HTTP_REPLY)
        response = decode_v2_response(reply)
        status = response.status
        # ERROR is judged by the token we had; the other statuses update it first.
        trigger = _V2_TRIGGERS[status, self._token != NO_TOKEN]
        if status is not Status.ERROR:
            self._token = response.token or self._token
            self._you = response.you
        self._fire(trigger)
        if status is Status.WAITING:
            return Waiting(response.you, self._token)
        if status is Status.PAIRED:
            return Paired(response.you, response.peer, self._token, response.peer_nat)
        if status is Status.TIMEOUT:
            return TimedOut(response.you, self._token)
        return ServerError(self.resumable)

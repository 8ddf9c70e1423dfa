"""The client side of a rendezvous as explicit transition tables (in the manner of h11's
``_state.py``): one dict per protocol from state to {trigger: next state}.

A trigger is something we do (send the first request, resume on a new connection) or
something the server's bytes amount to. Whether a v2 token is known is part of the
trigger (``ERROR`` vs ``ERROR_WITH_TOKEN``), so every decision is a table lookup and no
``if`` elsewhere decides where the conversation goes. A pair missing from the table is
an error: ``LocalProtocolError`` for our own triggers (e.g. resuming after PAIRED),
``RemoteProtocolError`` for the server's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from tcpunch.errors import LocalProtocolError, Reason, RemoteProtocolError


class ClientState(enum.Enum):
    IDLE = "idle"  # nothing sent yet
    AWAIT_ENDPOINT = "await_endpoint"  # v1: our own 8-byte endpoint is due
    AWAIT_PEER = "await_peer"  # v1: we know our endpoint; the peer's is due (or a close)
    AWAIT_RESPONSE = "await_response"  # v2: a 51-byte response is due
    PAIRED = "paired"  # done: the peer's endpoint is known
    WAIT_ENDED = "wait_ended"  # v1: the server closed after our endpoint: rejoin
    TIMED_OUT = "timed_out"  # v2 TIMEOUT: resume (with the token, if one is known)
    DISCONNECTED = "disconnected"  # v2: closed while a token was known: resume with it
    TOKEN_REFUSED = "token_refused"  # v2 ERROR after we had a token: start over without
    REFUSED = "refused"  # v2 ERROR to a request made without a token: final
    CLOSED = "closed"  # the server closed otherwise (nothing to resume): final
    FAILED = "failed"  # the server's bytes broke the protocol (RemoteProtocolError): final


class Trigger(enum.Enum):
    # ours
    SEND = "send"  # the first request, on the first connection
    RESUME = "resume"  # a request on a new connection after a resumable end
    # the server's
    OWN_ENDPOINT = "own_endpoint"  # v1: 8 bytes while our endpoint was due
    PEER_ENDPOINT = "peer_endpoint"  # v1: 8 bytes while the peer's was due
    WAITING = "waiting"  # v2 WAITING
    PAIRED = "paired"  # v2 PAIRED
    TIMEOUT = "timeout"  # v2 TIMEOUT
    ERROR = "error"  # v2 ERROR, no token known
    ERROR_WITH_TOKEN = "error_with_token"  # v2 ERROR while a token is known
    EOF = "eof"  # a close between replies, no token known
    EOF_MID_REPLY = "eof_mid_reply"  # a close part-way through a reply, no token known
    EOF_WITH_TOKEN = "eof_with_token"  # v2: a close while a token is known

    @property
    def ours(self) -> bool:
        return self in _OUR_TRIGGERS


_OUR_TRIGGERS = frozenset({Trigger.SEND, Trigger.RESUME})

S = ClientState
T = Trigger

V1_TRANSITIONS: Mapping[ClientState, Mapping[Trigger, ClientState]] = {
    S.IDLE: {T.SEND: S.AWAIT_ENDPOINT},
    S.AWAIT_ENDPOINT: {
        T.OWN_ENDPOINT: S.AWAIT_PEER,
        T.EOF: S.CLOSED,  # before any byte: how a v1 server refuses
        T.EOF_MID_REPLY: S.CLOSED,
    },
    S.AWAIT_PEER: {
        T.PEER_ENDPOINT: S.PAIRED,
        T.EOF: S.WAIT_ENDED,  # the server's wait limit passed: rejoin under the same name
        T.EOF_MID_REPLY: S.CLOSED,  # a partial peer endpoint: not a TCPunch v1 server
    },
    S.WAIT_ENDED: {T.RESUME: S.AWAIT_ENDPOINT},
    S.PAIRED: {T.EOF: S.PAIRED},  # the server closes after the peer's endpoint
    S.CLOSED: {},
    S.FAILED: {},
}

V2_TRANSITIONS: Mapping[ClientState, Mapping[Trigger, ClientState]] = {
    S.IDLE: {T.SEND: S.AWAIT_RESPONSE},
    S.AWAIT_RESPONSE: {
        T.WAITING: S.AWAIT_RESPONSE,  # the next response comes on the same connection
        T.PAIRED: S.PAIRED,
        T.TIMEOUT: S.TIMED_OUT,
        T.ERROR: S.REFUSED,
        T.ERROR_WITH_TOKEN: S.TOKEN_REFUSED,
        T.EOF: S.CLOSED,
        T.EOF_MID_REPLY: S.CLOSED,
        T.EOF_WITH_TOKEN: S.DISCONNECTED,
    },
    S.TIMED_OUT: {T.RESUME: S.AWAIT_RESPONSE, T.EOF: S.TIMED_OUT, T.EOF_WITH_TOKEN: S.TIMED_OUT},
    S.DISCONNECTED: {T.RESUME: S.AWAIT_RESPONSE},
    S.TOKEN_REFUSED: {T.RESUME: S.AWAIT_RESPONSE, T.EOF: S.TOKEN_REFUSED},
    S.REFUSED: {T.EOF: S.REFUSED},
    S.PAIRED: {T.EOF: S.PAIRED, T.EOF_WITH_TOKEN: S.PAIRED},
    S.CLOSED: {},
    S.FAILED: {},
}

#: States from which ``resume()`` is allowed (derived from the tables, so they agree).
RESUMABLE = frozenset(
    state
    for table in (V1_TRANSITIONS, V2_TRANSITIONS)
    for state, triggers in table.items()
    if Trigger.RESUME in triggers
)

#: The state in which the token known so far is dropped: the server refused it.
FORGETS_TOKEN = frozenset({ClientState.TOKEN_REFUSED})


def next_state(
    table: Mapping[ClientState, Mapping[Trigger, ClientState]], state: ClientState, trigger: Trigger
) -> ClientState:
    """The state ``trigger`` leads to from ``state``; the side's ProtocolError if none."""
    try:
        return table[state][trigger]
    except KeyError:
        pass
    if trigger.ours:
        raise LocalProtocolError(
            f"cannot {trigger.value} in state {state.name}", Reason.OUT_OF_ORDER
        ) from None
    raise RemoteProtocolError(
        f"the server's {trigger.value} is not expected in state {state.name}", Reason.UNEXPECTED
    ) from None

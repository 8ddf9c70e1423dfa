"""What the client exchange (:mod:`tcpunch.client`) reports about the server's replies.

Frozen, slotted and validated at construction (LocalProtocolError), like the requests:
an event holding a port outside 0..65535, a token that is not a UUID or a negative byte
count cannot exist, so code that receives one need not check it again. A reconnect
token lets its holder take over the wait: it is left out of the reprs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpunch.endpoint import Endpoint
from tcpunch.errors import LocalProtocolError, Reason
from tcpunch.nathint import NatClass
from tcpunch.v2 import NO_TOKEN, check_token


def _check_endpoint(endpoint: object, what: str) -> None:
    # An Endpoint was checked when it was built.
    if not isinstance(endpoint, Endpoint):
        raise LocalProtocolError(
            f"{what} is an Endpoint, not {type(endpoint).__name__}", Reason.WRONG_TYPE
        )


def _check_token_field(event: object, token: str) -> None:
    canonical = check_token(token)
    if canonical != token:
        object.__setattr__(event, "token", canonical)


def _check_count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise LocalProtocolError(f"{what} is an int >= 0, not {value!r}", Reason.WRONG_TYPE)
    return value


@dataclass(frozen=True, slots=True)
class OwnEndpoint:
    """v1: the server's first reply, our endpoint as it saw us. The peer's comes next
    (when the peer arrives) or the server closes (its wait limit: rejoin)."""

    you: Endpoint

    def __post_init__(self) -> None:
        _check_endpoint(self.you, "you")


@dataclass(frozen=True, slots=True)
class Waiting:
    """v2 WAITING: the server holds our request until the peer comes; ``token`` (if the
    server sent one) resumes the wait on a new connection."""

    you: Endpoint
    token: str = field(default=NO_TOKEN, repr=False)  # a bearer secret: never in a repr

    def __post_init__(self) -> None:
        _check_endpoint(self.you, "you")
        _check_token_field(self, self.token)


@dataclass(frozen=True, slots=True)
class Paired:
    """Both protocols: the peer's public endpoint has come; punch from our local port.

    ``peer_nat``: the peer's NAT class as the server passed it on (v2, when we asked for
    hints and the server passes them), else None."""

    you: Endpoint
    peer: Endpoint
    token: str = field(default=NO_TOKEN, repr=False)  # a bearer secret: never in a repr
    peer_nat: NatClass | None = None

    def __post_init__(self) -> None:
        _check_endpoint(self.you, "you")
        _check_endpoint(self.peer, "peer")
        _check_token_field(self, self.token)
        if self.peer_nat is not None and type(self.peer_nat) is not NatClass:
            raise LocalProtocolError("peer_nat is a NatClass or None", Reason.WRONG_TYPE)


@dataclass(frozen=True, slots=True)
class TimedOut:
    """v2 TIMEOUT: the server's wait limit passed. Resumable: ``resume()`` gives the
    request (with the token, when one is known) for a new connection."""

    you: Endpoint
    token: str = field(default=NO_TOKEN, repr=False)  # a bearer secret: never in a repr

    def __post_init__(self) -> None:
        _check_endpoint(self.you, "you")
        _check_token_field(self, self.token)


@dataclass(frozen=True, slots=True)
class ServerError:
    """v2 ERROR. ``resumable``: a token had been sent, so the server likely no longer
    knows it (stale, expired): ``resume()`` starts over without it. Otherwise the server
    refused a fresh request (a name rule, a cap, a policy) and the exchange is over."""

    resumable: bool

    def __post_init__(self) -> None:
        if type(self.resumable) is not bool:
            raise LocalProtocolError("resumable is a bool", Reason.WRONG_TYPE)


@dataclass(frozen=True, slots=True)
class ServerClosed:
    """The server closed the connection (EOF, or a reset the caller reports as EOF).

    ``received`` bytes of the ``expected``-byte reply had arrived (``expected`` is 0 when
    no reply was due: after PAIRED, TIMEOUT or ERROR a close is normal); ``replies``
    complete replies had come on this connection. ``resumable``: ``resume()`` may be
    called (v1: the server ended our wait after our endpoint; v2: a token is known).
    """

    received: int
    expected: int
    replies: int
    resumable: bool

    def __post_init__(self) -> None:
        received = _check_count(self.received, "received")
        if received > _check_count(self.expected, "expected"):
            raise LocalProtocolError(
                f"received ({received}) exceeds expected ({self.expected})", Reason.WRONG_SIZE
            )
        _check_count(self.replies, "replies")
        if type(self.resumable) is not bool:
            raise LocalProtocolError("resumable is a bool", Reason.WRONG_TYPE)


Event = OwnEndpoint | Waiting | Paired | TimedOut | ServerError | ServerClosed

"""What the shared room answers and tells: outcomes of an arrival, events for waiters.

Kept apart from :mod:`rendezvous.shared_room` (the Redis side) so the dispatcher and the
tests read the shapes without the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tcpunch import Endpoint

Protocol = Literal["v1", "v2"]


@dataclass(frozen=True, eq=False)
class SharedWaiter:
    """A waiting entry. ``handle`` is set on the replica that holds the connection
    (None for a waiter of another replica, handed over in :class:`Paired`)."""

    name: bytes
    handle: Any
    endpoint: Endpoint
    protocol: Protocol
    since: float
    token: str | None
    replica: str
    connection: str
    nat: int = 0  # the NAT class its request reported (tcpunch.nathint; 0: unknown, v1)


@dataclass(frozen=True)
class Paired:
    """The arrival pairs with ``waiter`` (possibly on another replica, which is told)."""

    waiter: SharedWaiter
    token: str | None = None


@dataclass(frozen=True)
class Waiting:
    """The arrival waits as ``waiter``. ``replaced``: this replica's older connection of
    the same token, which the caller closes (one on another replica is told instead)."""

    waiter: SharedWaiter
    replaced: SharedWaiter | None = None


@dataclass(frozen=True)
class Refused:
    """``reason`` is the metric label (the in-memory room's plus ``replica_not_live``)."""

    reason: str
    detail: str


Outcome = Paired | Waiting | Refused


@dataclass(frozen=True)
class PeerArrived:
    """A peer arrived for ``waiter`` (on this replica): send both replies, close."""

    waiter: SharedWaiter
    peer: Endpoint
    peer_protocol: Protocol
    peer_nat: int = 0  # the NAT class the peer's request reported


@dataclass(frozen=True)
class Displaced:
    """The same token resumed on another replica: close this older connection."""

    waiter: SharedWaiter


@dataclass(frozen=True)
class Removed:
    """``remove_pair_<name>`` or ``delete_pairs`` (on any replica) removed this waiter."""

    waiter: SharedWaiter


@dataclass(frozen=True)
class Lost:
    """Redis no longer holds this waiter (heartbeat lapse, Redis restarted empty): nobody
    can pair with it. v2: send ERROR (the token resumes within its grace); v1: close."""

    waiter: SharedWaiter


RoomEvent = PeerArrived | Displaced | Removed | Lost

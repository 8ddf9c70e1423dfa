"""Deadlines without a timer per connection: insertion-ordered dicts and one sweep.

Each kind of deadline (a request's, a v1 waiter's, a v2 waiter's) has one fixed
duration, so the dict of that kind, in insertion order, is also in expiry order: a
sweep takes the expired front and stops at the first deadline still ahead. One
``loop.call_later`` tick in :mod:`rendezvous.server` runs the sweep; a timer per
connection would cost more than the rest of a pairing.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from rendezvous.room import ProtocolVersion


class HasProtocol(Hashable, Protocol):
    """What the deadlines need of a connection: hashable, and its protocol version."""

    @property
    def protocol(self) -> ProtocolVersion: ...


C = TypeVar("C", bound=HasProtocol)


def pop_due(deadlines: dict[C, float], now: float) -> list[C]:
    """Take the entries whose deadline has passed off the front of ``deadlines``."""
    due = []
    for conn, deadline in deadlines.items():
        if deadline > now:
            break
        due.append(conn)
    for conn in due:
        del deadlines[conn]
    return due


class Deadlines(Generic[C]):
    """The three ordered deadline dicts. Plain dicts as attributes: the connection's
    hot path sets and pops them directly."""

    __slots__ = ("reading", "v1", "v2")

    def __init__(self) -> None:
        self.reading: dict[C, float] = {}  # requests in flight: complete by then
        self.v1: dict[C, float] = {}  # v1 waiters: closed then
        self.v2: dict[C, float] = {}  # v2 waiters: TIMEOUT then

    def waiters(self, protocol: ProtocolVersion) -> dict[C, float]:
        return self.v2 if protocol == "v2" else self.v1

    def untrack_waiter(self, conn: C) -> None:
        (self.v2 if conn.protocol == "v2" else self.v1).pop(conn, None)

    def due_requests(self, now: float) -> list[C]:
        return pop_due(self.reading, now)

    def due_waiters(self, now: float) -> list[C]:
        """Expired v1 waiters, then expired v2 waiters."""
        return pop_due(self.v1, now) + pop_due(self.v2, now)

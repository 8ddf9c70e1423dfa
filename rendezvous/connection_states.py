"""A rendezvous connection's states and events, and the one table of which follows which.

Written down once (as h11's ``_state.py`` does) and compiled into ``NEXT`` for
:meth:`rendezvous.connection.Connection._apply`, the only place that changes a state.
"""

from __future__ import annotations

import enum


class State(enum.IntEnum):
    """Where a connection is. IntEnum: the table's keys hash in C, not in Python."""

    NEW = 0  # created by the loop; connection_made not yet run
    READING = 1  # accepted; its request is not complete yet
    DISPATCHING = 2  # its request is complete and being decided on
    WAITING = 3  # parked in the room until a peer, its deadline or a hang-up
    CLOSED = 4  # answered, refused or gone; nothing more happens
    PROXY_HEADER = 5  # accepted behind a balancer (--proxy-protocol): reading its header
    ARRIVING = 6  # its request waits for the shared room's (Redis) outcome (--redis)


class Event(enum.IntEnum):
    """What happens to a connection."""

    ACCEPT = 0  # connection_made let it in
    REFUSE = 1  # connection_made turned it away (cap, not IPv4)
    REQUEST = 2  # a complete request was read
    PARK = 3  # dispatch made it a waiter
    ANSWER = 4  # the last bytes (if any) are written and it is closed
    LOST = 5  # the peer hung up, or its transport is closing under us
    ABORT = 6  # the server stops: closed without an answer
    HAND_OFF = 7  # a relay request: the transport goes to rendezvous.relay
    VANISH = 8  # gone before connection_made could read its address (a probe's reset)
    EXPECT_PROXY = 9  # connection_made let it in; a PROXY v2 header comes first
    HEADER = 10  # the PROXY header named the client: now its request
    DEFER = 11  # the shared room decides asynchronously (a Redis round trip)


# The members as module globals: ``State.READING`` is a descriptor lookup (~0.1 us on
# CPython 3.11) and the per-connection path tests the state a dozen times.
NEW = State.NEW
READING = State.READING
DISPATCHING = State.DISPATCHING
WAITING = State.WAITING
CLOSED = State.CLOSED
PROXY_HEADER = State.PROXY_HEADER
ARRIVING = State.ARRIVING
ACCEPT = Event.ACCEPT
REFUSE = Event.REFUSE
REQUEST = Event.REQUEST
PARK = Event.PARK
ANSWER = Event.ANSWER
LOST = Event.LOST
ABORT = Event.ABORT
HAND_OFF = Event.HAND_OFF
VANISH = Event.VANISH
EXPECT_PROXY = Event.EXPECT_PROXY
HEADER = Event.HEADER
DEFER = Event.DEFER

# Every allowed (state, event) and the state it leads to; nothing else is allowed.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (NEW, ACCEPT): READING,
    (NEW, REFUSE): CLOSED,
    (NEW, LOST): CLOSED,
    (NEW, ABORT): CLOSED,
    (NEW, VANISH): CLOSED,  # reset before it was accepted: closed at once, counted
    (READING, REQUEST): DISPATCHING,
    (READING, ANSWER): CLOSED,  # refused: malformed, over-long, timed out, drained
    (READING, LOST): CLOSED,  # hung up before a complete request
    (READING, ABORT): CLOSED,
    (DISPATCHING, PARK): WAITING,
    (DISPATCHING, ANSWER): CLOSED,  # paired as the newcomer, refused, or a command
    (DISPATCHING, LOST): CLOSED,
    (DISPATCHING, ABORT): CLOSED,
    (WAITING, ANSWER): CLOSED,  # paired, expired, replaced or removed
    (WAITING, LOST): CLOSED,  # hung up while waiting: abandoned
    (WAITING, ABORT): CLOSED,
    (CLOSED, ANSWER): CLOSED,  # an internal error after the answer: close again, no-op
    (CLOSED, LOST): CLOSED,  # connection_lost after we closed
    (CLOSED, ABORT): CLOSED,
    (DISPATCHING, HAND_OFF): CLOSED,  # a relay request: rendezvous.relay owns the transport
    # --proxy-protocol: the balancer's header first, under the request deadline
    (NEW, EXPECT_PROXY): PROXY_HEADER,
    (PROXY_HEADER, HEADER): READING,  # the deadline carries over
    (PROXY_HEADER, ANSWER): CLOSED,  # bad header, health check (LOCAL), timed out
    (PROXY_HEADER, LOST): CLOSED,
    (PROXY_HEADER, ABORT): CLOSED,
    # --redis: the room's outcome comes from a task (rendezvous.shared_dispatch)
    (DISPATCHING, DEFER): ARRIVING,
    (ARRIVING, PARK): WAITING,
    (ARRIVING, ANSWER): CLOSED,  # paired as the newcomer, refused, Redis unavailable
    (ARRIVING, LOST): CLOSED,  # hung up meanwhile: the task cleans up after the outcome
    (ARRIVING, ABORT): CLOSED,
    (ARRIVING, HAND_OFF): CLOSED,  # a relay end, after Redis named its owner replica
}

# The table compiled for ``Connection._apply``: ``NEXT[event][state]`` is the next state, or None
# where the table has no row (two tuple indexings instead of hashing a tuple key).
NEXT: tuple[tuple[State | None, ...], ...] = tuple(
    tuple(TRANSITIONS.get((state, event)) for state in State) for event in Event
)


class InvalidTransition(RuntimeError):
    """An event the table does not allow in the connection's state: a bug of ours."""

"""The connection's state table: every state ends in CLOSED, nothing leaves CLOSED, and an
event the table does not list raises instead of silently changing state."""

from __future__ import annotations

import pytest

from rendezvous.connection import (
    CLOSED,
    NEW,
    READING,
    TRANSITIONS,
    WAITING,
    Connection,
    Event,
    InvalidTransition,
    State,
)
from rendezvous.dispatch import Dispatcher
from rendezvous.settings import Settings


def test_every_state_closes_on_lost_and_abort():
    for state in State:
        assert TRANSITIONS[state, Event.LOST] is CLOSED
        assert TRANSITIONS[state, Event.ABORT] is CLOSED


def test_closed_is_final():
    assert {new for (old, _), new in TRANSITIONS.items() if old is CLOSED} == {CLOSED}


def test_every_state_is_reachable_from_new():
    seen, todo = {NEW}, [NEW]
    while todo:
        state = todo.pop()
        for (old, _), new in TRANSITIONS.items():
            if old is state and new not in seen:
                seen.add(new)
                todo.append(new)
    assert seen == set(State)


def test_the_happy_paths():
    assert TRANSITIONS[NEW, Event.ACCEPT] is READING
    assert TRANSITIONS[READING, Event.REQUEST] is State.DISPATCHING
    assert TRANSITIONS[State.DISPATCHING, Event.PARK] is WAITING
    assert TRANSITIONS[WAITING, Event.ANSWER] is CLOSED


def test_an_event_not_in_the_table_raises_and_keeps_the_state():
    conn = Connection(Dispatcher(Settings()))
    assert conn.state is NEW
    with pytest.raises(InvalidTransition, match="REQUEST is not allowed in NEW"):
        conn._apply(Event.REQUEST)
    assert conn.state is NEW
    assert conn._apply(Event.ACCEPT) is NEW and conn.state is READING
    with pytest.raises(InvalidTransition, match="PARK is not allowed in READING"):
        conn._apply(Event.PARK)
    assert conn.state is READING

"""The sans-IO room: pairing decisions with an explicit clock, no sockets."""

from __future__ import annotations

import itertools

from rendezvous.room import Paired, Refused, Room, Waiting
from tcpunch import Endpoint

A = Endpoint("198.18.0.1", 1111)
B = Endpoint("198.18.0.2", 2222)
C = Endpoint("198.18.0.1", 3333)


def room(**kwargs) -> Room:
    counter = itertools.count()
    kwargs.setdefault("token_factory", lambda: f"00000000-0000-4000-8000-{next(counter):012d}")
    return Room(**kwargs)


def test_first_waits_second_pairs():
    r = room()
    first = r.arrive(b"n", "h1", A, "v1", now=0.0)
    assert isinstance(first, Waiting) and first.waiter.token is None
    second = r.arrive(b"n", "h2", B, "v1", now=2.5)
    assert isinstance(second, Paired)
    assert second.waiter.handle == "h1" and second.waiter.since == 0.0
    assert len(r) == 0 and r.waiting_from(A.ip) == 0


def test_v1_bytes_and_v2_utf8_share_a_key():
    r = room()
    r.arrive("größe".encode(), "h1", A, "v1", 0)
    assert isinstance(r.arrive("größe".encode(), "h2", B, "v2", 1), Paired)


def test_names_are_independent():
    r = room()
    r.arrive(b"a", "h1", A, "v1", 0)
    assert isinstance(r.arrive(b"b", "h2", B, "v1", 0), Waiting)
    assert len(r) == 2


def test_v2_gets_token():
    r = room()
    out = r.arrive(b"n", "h", A, "v2", 0)
    assert isinstance(out, Waiting) and out.waiter.token
    assert r.token_count == 1


def test_per_ip_cap_counts_waiters_only():
    r = room(max_waiting_per_ip=1)
    r.arrive(b"a", "h1", A, "v1", 0)
    refused = r.arrive(b"b", "h2", C, "v1", 0)  # same IP as A
    assert isinstance(refused, Refused) and refused.reason == "per_ip_waiting_cap"
    assert isinstance(r.arrive(b"a", "h3", C, "v1", 0), Paired)  # pairing is fine
    assert isinstance(r.arrive(b"b", "h4", C, "v1", 0), Waiting)  # slot is free again


def test_leave_frees_slot_and_keeps_token_for_grace():
    r = room(token_grace=10)
    w = r.arrive(b"n", "h", A, "v2", 0).waiter
    assert r.leave(w, now=60)
    assert not r.leave(w, now=60)  # a second leave is a no-op
    assert len(r) == 0
    back = r.arrive(b"n", "h2", A, "v2", 69.9, token=w.token)
    assert isinstance(back, Waiting) and back.waiter.token == w.token


def test_token_expires_after_grace():
    r = room(token_grace=10)
    w = r.arrive(b"n", "h", A, "v2", 0).waiter
    r.leave(w, now=60)
    late = r.arrive(b"n", "h2", A, "v2", 70.1, token=w.token)
    assert isinstance(late, Refused) and late.reason == "bad_token"


def test_token_never_expires_while_its_waiter_waits():
    r = room(token_grace=1)
    w = r.arrive(b"n", "h", A, "v2", 0).waiter
    again = r.arrive(b"n", "h2", A, "v2", 10_000, token=w.token)
    assert isinstance(again, Waiting) and again.replaced is w
    assert r.waiter(b"n").handle == "h2" and len(r) == 1 and r.waiting_from(A.ip) == 1


def test_unknown_token_and_wrong_name():
    r = room()
    out = r.arrive(b"n", "h", A, "v2", 0, token="12345678-1234-4234-8234-123456789abc")
    assert isinstance(out, Refused) and out.reason == "bad_token"
    w = r.arrive(b"n", "h", A, "v2", 0).waiter
    other = r.arrive(b"other", "h2", A, "v2", 0, token=w.token)
    assert isinstance(other, Refused) and "another pairing name" in other.detail


def test_token_resume_pairs_with_a_new_waiter():
    r = room()
    w = r.arrive(b"n", "h1", A, "v2", 0).waiter
    r.leave(w, 60)
    r.arrive(b"n", "h2", B, "v1", 61)
    out = r.arrive(b"n", "h3", A, "v2", 62, token=w.token)
    assert isinstance(out, Paired) and out.waiter.handle == "h2" and out.token == w.token
    assert r.token_count == 0  # spent


def test_paired_waiters_token_is_spent():
    r = room()
    w = r.arrive(b"n", "h1", A, "v2", 0).waiter
    r.arrive(b"n", "h2", B, "v2", 1)
    out = r.arrive(b"n", "h3", A, "v2", 2, token=w.token)
    assert isinstance(out, Refused)


def test_remove_name_and_clear():
    r = room()
    r.arrive(b"a", "h1", A, "v1", 0)
    r.arrive(b"b", "h2", B, "v2", 0)
    assert r.remove_name(b"a", 1).handle == "h1"
    assert r.remove_name(b"a", 1) is None
    assert [w.handle for w in r.clear(2)] == ["h2"]
    assert len(r) == 0 and r.waiting_from(B.ip) == 0


def test_purge_tokens_forgets_only_stale_ones():
    r = room(token_grace=5)
    w1 = r.arrive(b"a", "h1", A, "v2", 0).waiter
    r.arrive(b"b", "h2", B, "v2", 0)
    r.leave(w1, 1)
    assert r.purge_tokens(3) == 0
    assert r.purge_tokens(7) == 1
    assert r.token_count == 1  # the waiting one stays


def test_ten_thousand_waiters_then_all_pair():
    r = room(max_waiting_per_ip=20_000)
    for i in range(10_000):
        r.arrive(b"n%d" % i, i, A, "v1", 0)
    assert len(r) == 10_000 and r.waiting_from(A.ip) == 10_000
    for i in range(10_000):
        assert isinstance(r.arrive(b"n%d" % i, -i, B, "v2", 1), Paired)
    assert len(r) == 0 and r.waiting_from(A.ip) == 0

"""The Redis pairing store with a real redis-server and several replicas in this process
(each its own Redis connections, heartbeat and notice channel)."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from rendezvous.shared_room import (
    Displaced,
    Lost,
    Paired,
    PeerArrived,
    Refused,
    Removed,
    Waiting,
)
from tests.replicas.harness import FAST, Replica, ep, replicas, until


async def test_sides_at_different_replicas_pair_v1_v2_and_mixed(redis_server):
    async with replicas(redis_server.url, 2) as (a, b):
        for first, second in (("v1", "v1"), ("v2", "v2"), ("v1", "v2"), ("v2", "v1")):
            name = f"fmi_pair_{first}_{second}".encode()
            waiting = await a.room.arrive(name, "A", ep(1), first, 1.0)
            assert isinstance(waiting, Waiting) and waiting.waiter.handle == "A"
            assert (waiting.waiter.token is not None) == (first == "v2")
            paired = await b.room.arrive(name, "B", ep(2), second, 2.0)
            assert isinstance(paired, Paired)
            assert paired.waiter.endpoint == ep(1) and paired.waiter.replica == "r0"
            assert paired.waiter.protocol == first
            await until(lambda: len(a.of(PeerArrived)) == 1)
            event = a.of(PeerArrived).pop()
            a.events.clear()
            assert event.waiter is waiting.waiter  # the waiter's own handle comes back
            assert (event.peer, event.peer_protocol) == (ep(2), second)
        assert await a.room.waiting_count() == 0
        assert await a.room.waiting_from("198.51.100.1") == 0
        assert a.room.local_waiters == 0
        assert a.room.presence.lapses == b.room.presence.lapses == 0  # a fresh start: none


@pytest.mark.timeout(120)
async def test_racing_sides_match_exactly_once(redis_server):
    """200 names, both sides (and for a quarter a third client) racing on 3 replicas.

    All 466 arrivals start at once; the per-call deadline is raised so that queueing on
    a loaded two-core CI machine is not mistaken for Redis being away."""
    async with replicas(redis_server.url, 3, op_timeout=10) as group:
        rng = random.Random(16)
        jobs = []
        for n in range(200):
            clients = 3 if n % 4 == 0 else 2
            for side in range(clients):
                replica = rng.choice(group)
                endpoint = ep(n * 3 + side, f"10.0.{side}.{n % 250 + 1}")
                protocol = rng.choice(["v1", "v2"])
                jobs.append((f"race_{n}".encode(), replica, endpoint, protocol))
        rng.shuffle(jobs)
        outcomes = await asyncio.gather(
            *(r.room.arrive(name, e, e, p, 0.0) for name, r, e, p in jobs)
        )
        by_name: dict[bytes, list[Any]] = {}
        for (name, _, endpoint, _), outcome in zip(jobs, outcomes, strict=True):
            by_name.setdefault(name, []).append((endpoint, outcome))
        await until(lambda: sum(len(r.of(PeerArrived)) for r in group) == 200)
        heard = {e.waiter.handle: e.peer for r in group for e in r.of(PeerArrived)}
        assert len(heard) == 200  # every waiter told once, never twice
        for name, results in by_name.items():
            kinds = sorted(type(o).__name__ for _, o in results)
            expected = ["Paired", "Waiting"] + (["Waiting"] if len(results) == 3 else [])
            assert kinds == expected, name
            [(newcomer, paired)] = [(e, o) for e, o in results if isinstance(o, Paired)]
            assert heard[paired.waiter.endpoint] == newcomer  # the pair saw each other
        left = await group[0].room.waiting_count()
        assert left == 50 == sum(r.room.local_waiters for r in group)


async def test_stopped_heartbeat_waiters_never_handed_out_and_reaped(redis_server):
    async with replicas(redis_server.url, 2, **FAST) as (a, b):
        tokens = []
        for i in range(5):
            outcome = await a.room.arrive(f"dead_{i}".encode(), i, ep(i), "v2", 0.0)
            assert isinstance(outcome, Waiting)
            tokens.append(outcome.waiter.token)
        a.room.presence.stop_beating()  # frozen as far as Redis can tell; still listening
        probe = Redis.from_url(redis_server.url, socket_timeout=5)
        try:
            await until(lambda: not a.room.ready, 5)
            async with asyncio.timeout(5):
                while await probe.exists(f"{a.room.prefix}hb:r0"):
                    await asyncio.sleep(0.05)
            for i in range(5):
                outcome = await b.room.arrive(f"dead_{i}".encode(), "n", ep(10 + i), "v1", 0)
                assert isinstance(outcome, Waiting)  # never the dead replica's waiter
            assert a.of(PeerArrived) == []
            assert await b.room.waiting_from("198.51.100.1") == 5  # the dead ones' counts gone
            for i in range(5):
                assert await b.room.leave(_waiter_of(b, f"dead_{i}"), 0.0)
            # a token of a reaped waiter resumes on another replica within its grace
            resumed = await b.room.arrive(b"dead_0", "again", ep(0), "v2", 0.0, tokens[0])
            assert isinstance(resumed, Waiting) and resumed.waiter.token == tokens[0]
            assert a.of(Lost) == []
            a.room.presence.start_beating()  # the frozen replica wakes up
            await until(lambda: len(a.of(Lost)) == 5, 5)  # and learns it was cut off
            assert {e.waiter.handle for e in a.of(Lost)} == set(range(5))
            await until(lambda: a.room.ready, 5)
            assert a.room.local_waiters == 0
        finally:
            await probe.aclose()


def _waiter_of(replica: Replica, name: str) -> Any:
    return next(w for w in replica.room._local.values() if w.name == name.encode())


async def test_reaped_entries_expire_even_with_no_arrivals(redis_server):
    async with replicas(redis_server.url, 2, **FAST) as (a, b):
        for i in range(3):
            await a.room.arrive(f"gone_{i}".encode(), i, ep(i), "v1", 0.0)
        assert await b.room.waiting_count() == 3
        a.room.presence.stop_beating()
        async with asyncio.timeout(5):
            while await b.room.waiting_count():
                await asyncio.sleep(0.05)  # b's heartbeat reaps them
        assert b.room.presence.reaped == 3
        assert await b.room.waiting_from("198.51.100.1") == 0


async def test_token_resumes_and_displaces_across_replicas(redis_server):
    async with replicas(redis_server.url, 2) as (a, b):
        first = await a.room.arrive(b"tok", "A1", ep(1), "v2", 0.0)
        assert isinstance(first, Waiting)
        token = first.waiter.token
        assert token is not None
        # the same client comes back through another replica: the old connection goes
        again = await b.room.arrive(b"tok", "A2", ep(1), "v2", 1.0, token)
        assert isinstance(again, Waiting) and again.waiter.token == token
        assert again.replaced is None  # it was on the other replica, which is told
        await until(lambda: len(a.of(Displaced)) == 1)
        assert a.of(Displaced)[0].waiter.handle == "A1"
        assert await a.room.waiting_from("198.51.100.1") == 1
        # timed out there, resumes here, pairs with a peer that reached the first replica
        assert await b.room.leave(again.waiter, 2.0)
        back = await a.room.arrive(b"tok", "A3", ep(1), "v2", 3.0, token)
        assert isinstance(back, Waiting) and back.waiter.token == token
        paired = await b.room.arrive(b"tok", "B", ep(2), "v2", 4.0)
        assert isinstance(paired, Paired) and paired.waiter.token == token
        await until(lambda: len(a.of(PeerArrived)) == 1)
        # a paired token is spent
        spent = await a.room.arrive(b"tok", "A4", ep(1), "v2", 5.0, token)
        assert isinstance(spent, Refused) and spent.reason == "bad_token"


async def test_same_replica_replacement_is_returned(redis_server):
    async with replicas(redis_server.url, 1) as (a,):
        first = await a.room.arrive(b"same", "old", ep(1), "v2", 0.0)
        assert isinstance(first, Waiting)
        again = await a.room.arrive(b"same", "new", ep(1), "v2", 1.0, first.waiter.token)
        assert isinstance(again, Waiting) and again.replaced is not None
        assert again.replaced.handle == "old"
        assert not await a.room.leave(again.replaced, 2.0)  # no longer in the room


async def test_bad_tokens_refused(redis_server):
    async with replicas(redis_server.url, 1) as (a,):
        unknown = await a.room.arrive(b"n", "x", ep(1), "v2", 0.0, str(uuid.uuid4()))
        assert isinstance(unknown, Refused) and unknown.reason == "bad_token"
        waiting = await a.room.arrive(b"n", "x", ep(1), "v2", 0.0)
        assert isinstance(waiting, Waiting)
        other = await a.room.arrive(b"m", "y", ep(2), "v2", 0.0, waiting.waiter.token)
        assert isinstance(other, Refused) and "another pairing name" in other.detail


async def test_per_ip_cap_holds_across_replicas(redis_server):
    async with replicas(redis_server.url, 3, max_waiting_per_ip=3) as group:
        held = []
        for i, replica in enumerate(group):
            outcome = await replica.room.arrive(f"cap_{i}".encode(), i, ep(i), "v1", 0.0)
            assert isinstance(outcome, Waiting)
            held.append((replica, outcome.waiter))
        for replica in group:
            refused = await replica.room.arrive(b"cap_x", "x", ep(9), "v1", 0.0)
            assert isinstance(refused, Refused) and refused.reason == "per_ip_waiting_cap"
        other_ip = await group[0].room.arrive(b"cap_y", "y", ep(9, "203.0.113.9"), "v1", 0)
        assert isinstance(other_ip, Waiting)
        replica, waiter = held[0]
        assert await replica.room.leave(waiter, 1.0)
        assert isinstance(await group[2].room.arrive(b"cap_x", "x", ep(9), "v1", 0.0), Waiting)


async def test_remove_name_and_clear_reach_the_holding_replica(redis_server):
    async with replicas(redis_server.url, 2) as (a, b):
        await a.room.arrive(b"rm_1", "h1", ep(1), "v1", 0.0)
        await a.room.arrive(b"rm_2", "h2", ep(2), "v2", 0.0)
        await b.room.arrive(b"rm_3", "h3", ep(3), "v1", 0.0)
        assert await b.room.remove_name(b"rm_1", 1.0)
        assert not await b.room.remove_name(b"rm_nobody", 1.0)
        await until(lambda: [e.waiter.handle for e in a.of(Removed)] == ["h1"])
        assert await b.room.clear(2.0) == 2
        await until(lambda: len(a.of(Removed)) == 2 and len(b.of(Removed)) == 1)
        assert await a.room.waiting_count() == 0
        assert a.room.local_waiters == b.room.local_waiters == 0


async def test_clean_stop_hands_waiters_back_at_once(redis_server):
    async with replicas(redis_server.url, 1) as (b,):
        leaving = Replica(redis_server.url, b.room.prefix, replica_id="leaving")
        await leaving.room.start(ready_timeout=10)
        await leaving.room.arrive(b"bye", "h", ep(1), "v1", 0.0)
        await leaving.room.stop()  # retires: no waiting for the heartbeat to expire
        assert await b.room.waiting_count() == 0
        assert isinstance(await b.room.arrive(b"bye", "n", ep(2), "v1", 0.0), Waiting)


async def test_nat_classes_cross_replicas_both_ways(redis_server):
    """The waiter's class comes back in Paired (its entry), the newcomer's reaches the
    waiter's replica in PeerArrived (the notice), whichever replica each side reached."""
    async with replicas(redis_server.url, 2) as (a, b):
        waiting = await a.room.arrive(b"nat_pair", "A", ep(1), "v2", 1.0, nat=2)
        assert isinstance(waiting, Waiting) and waiting.waiter.nat == 2
        paired = await b.room.arrive(b"nat_pair", "B", ep(2), "v2", 2.0, nat=3)
        assert isinstance(paired, Paired) and paired.waiter.nat == 2
        await until(lambda: len(a.of(PeerArrived)) == 1)
        assert a.of(PeerArrived)[0].peer_nat == 3
        # v1 arrivals report nothing: 0 (unknown) on both paths
        await a.room.arrive(b"nat_v1", "A", ep(3), "v1", 3.0)
        paired = await b.room.arrive(b"nat_v1", "B", ep(4), "v2", 4.0, nat=1)
        assert isinstance(paired, Paired) and paired.waiter.nat == 0
        await until(lambda: len(a.of(PeerArrived)) == 2)
        assert a.of(PeerArrived)[1].peer_nat == 1


async def test_entries_and_notices_of_replicas_without_hints_read_as_unknown(redis_server):
    """An older replica writes 7-field entries and 5-field notices: read as class 0."""
    async with replicas(redis_server.url, 1) as (a,):
        waiting = await a.room.arrive(b"old_notice", "A", ep(1), "v2", 1.0, nat=1)
        assert isinstance(waiting, Waiting)
        channel = a.room.prefix + "ch:" + a.room.replica
        notice = f"P|{waiting.waiter.connection}|198.51.100.9|4242|v2"
        await a.room.client.publish(channel, notice)
        await until(lambda: len(a.of(PeerArrived)) == 1)
        event = a.of(PeerArrived)[0]
        assert event.peer == ep(0, "198.51.100.9")._replace(port=4242)
        assert event.peer_nat == 0
        old_entry = f"{a.room.replica}|77|198.51.100.8|4000|v2|1.0|"
        await a.room.client.hset(a.room.prefix + "waiters", "old_entry", old_entry)
        await a.room.client.hincrby(a.room.prefix + "perip", "198.51.100.8", 1)
        await a.room.client.sadd(a.room.prefix + "r:" + a.room.replica, "old_entry")
        paired = await a.room.arrive(b"old_entry", "B", ep(2), "v2", 2.0, nat=2)
        assert isinstance(paired, Paired)
        assert paired.waiter.endpoint.port == 4000 and paired.waiter.nat == 0

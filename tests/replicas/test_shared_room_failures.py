"""Failures of real processes: Redis stopped and restarted under running replicas, a
replica process killed with SIGKILL, a replica's notice connection cut."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from redis.asyncio import Redis

from rendezvous.shared_room import Lost, Paired, PeerArrived, RedisUnavailable, Refused, Waiting
from testbed.procs import python_env
from testbed.redis_server import RedisServer
from tests.replicas.conftest import have_redis_server
from tests.replicas.harness import FAST, ep, replicas, until


@pytest.mark.timeout(120)
async def test_redis_restart_reported_then_recovered_without_restarting(tmp_path):
    have_redis_server()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        async with replicas(redis.url, 2, **FAST) as (a, b):
            before = await a.room.arrive(b"outage_1", "w1", ep(1), "v2", 0.0)
            assert isinstance(before, Waiting)
            await b.room.arrive(b"outage_2", "w2", ep(2), "v1", 0.0)
            redis.stop()
            async with asyncio.timeout(3):  # promptly, not after a long socket timeout
                with pytest.raises(RedisUnavailable, match="Redis"):
                    await a.room.arrive(b"outage_3", "w3", ep(3), "v1", 1.0)
            await until(lambda: not a.room.ready and not b.room.ready, 5)
            with pytest.raises(RedisUnavailable, match="not connected"):
                await b.room.arrive(b"outage_3", "w3", ep(3), "v1", 1.0)  # at once
            # nobody can pair with them any more: their holders say so
            await until(lambda: [e.waiter.handle for e in a.of(Lost)] == ["w1"], 5)
            await until(lambda: [e.waiter.handle for e in b.of(Lost)] == ["w2"], 5)
            redis.start()  # same port, empty (no persistence)
            await until(lambda: a.room.ready and b.room.ready, 15)
            waiting = await a.room.arrive(b"after", "w4", ep(4), "v1", 2.0)
            assert isinstance(waiting, Waiting)
            paired = await b.room.arrive(b"after", "n4", ep(5), "v2", 2.0)
            assert isinstance(paired, Paired) and paired.waiter.endpoint == ep(4)
            await until(lambda: len(a.of(PeerArrived)) == 1)
            token = before.waiter.token
            stale = await b.room.arrive(b"outage_1", "w1", ep(1), "v2", 3.0, token)
            assert isinstance(stale, Refused) and stale.reason == "bad_token"
            assert a.room.presence.lapses >= 1
    finally:
        redis.stop()


async def test_cut_notice_connection_never_strands_a_pairing(redis_server):
    """With the waiter's notice connection cut, a newcomer either pairs and the waiter
    hears it, or waits itself and the old waiter is reported lost: never half of each."""
    async with replicas(redis_server.url, 2, **FAST) as (a, b):
        for round_ in range(5):
            name = f"cut_{round_}".encode()
            assert isinstance(await a.room.arrive(name, round_, ep(round_), "v1", 0), Waiting)
            probe = Redis.from_url(redis_server.url, socket_timeout=5)
            try:
                for client in await probe.client_list():
                    if client["name"] == "rendezvous-r0" and client["sub"] != "0":
                        await probe.client_kill_filter(_id=client["id"])  # a's notices
            finally:
                await probe.aclose()
            outcome = await b.room.arrive(name, "n", ep(50 + round_), "v1", 0.0)
            if isinstance(outcome, Paired):
                await until(lambda r=round_: r in [e.waiter.handle for e in a.of(PeerArrived)], 5)
                assert round_ not in [e.waiter.handle for e in a.of(Lost)]
            else:
                assert isinstance(outcome, Waiting)
                await until(lambda r=round_: r in [e.waiter.handle for e in a.of(Lost)], 5)
                assert await b.room.leave(outcome.waiter, 0.0)
            await until(lambda: a.room.ready and b.room.ready, 5)


_DOOMED = textwrap.dedent(
    """
    import asyncio, sys
    from rendezvous.shared_room import SharedRoom
    from tcpunch import Endpoint

    async def main(url, prefix):
        room = SharedRoom(url, lambda event: None, prefix=prefix, replica_id="doomed",
                          heartbeat_interval=0.2, heartbeat_ttl=0.8)
        await room.start(ready_timeout=10)
        for i in range(10):
            await room.arrive(f"k_{i}".encode(), i, Endpoint("192.0.2.1", 1000 + i),
                              "v1", 0.0)
        print("waiting", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.timeout(120)
async def test_sigkilled_replica_waiters_never_handed_out(redis_server):
    async with replicas(redis_server.url, 2, **FAST) as (b, c):
        prefix = b.room.prefix
        proc = subprocess.Popen(
            [sys.executable, "-c", _DOOMED, redis_server.url, prefix],
            stdout=subprocess.PIPE,
            env=python_env(),
        )
        probe = Redis.from_url(redis_server.url, socket_timeout=5)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            assert line.strip() == b"waiting"
            assert await b.room.waiting_count() == 10
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            channel = f"{prefix}ch:doomed"
            async with asyncio.timeout(5):  # Redis has seen the dead process's sockets go
                while (await probe.pubsub_numsub(channel))[0][1]:
                    await asyncio.sleep(0.01)
            # its heartbeat may still be live for up to 0.8 s: the script checks listeners
            for i in range(10):
                outcome = await b.room.arrive(f"k_{i}".encode(), i, ep(i), "v1", 0.0)
                assert isinstance(outcome, Waiting), f"k_{i} handed a dead waiter"
            # the survivors keep pairing across replicas
            for i in range(10):
                outcome = await c.room.arrive(f"k_{i}".encode(), "c", ep(100 + i), "v2", 0)
                assert isinstance(outcome, Paired) and outcome.waiter.replica == "r0"
            await until(lambda: len(b.of(PeerArrived)) == 10)
            # nothing of the dead replica is left once its heartbeat has expired
            async with asyncio.timeout(5):
                while await probe.sismember(f"{prefix}replicas", "doomed"):
                    await asyncio.sleep(0.05)
            assert await b.room.waiting_count() == 0
            assert await b.room.waiting_from("192.0.2.1") == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            await probe.aclose()


_BUSY = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1]) then break end
end
return 1
"""


async def test_arrival_cut_off_by_its_deadline_leaves_no_entry(redis_server):
    """Redis busy past the deadline: the caller is refused at the deadline, and whether
    or not its script still ran (Redis usually drops it with the cut connection), no
    entry of that connection remains for a peer to be paired with."""
    async with replicas(redis_server.url, 2, op_timeout=0.2, **FAST) as (a, b):
        await asyncio.wait_for(_cut_off(redis_server.url, a, b), 60)


async def _cut_off(url: str, a: Any, b: Any) -> None:
    probe = Redis.from_url(url, socket_timeout=5)
    try:
        busy = asyncio.create_task(probe.eval(_BUSY, 0, 600_000))  # Redis busy 0.6 s
        await asyncio.sleep(0.05)
        with pytest.raises(RedisUnavailable, match=r"within 0\.20 s"):
            await a.room.arrive(b"cut_off", "gone", ep(1), "v1", 0.0)
        assert await busy == 1
        await until(lambda: a.room.ready and b.room.ready, 5)
        async with asyncio.timeout(5):  # the departure is retried with the heartbeat
            while await b.room.waiting_count():
                await asyncio.sleep(0.05)
        outcome = await b.room.arrive(b"cut_off", "n", ep(2), "v1", 0.0)
        assert isinstance(outcome, Waiting)
        assert a.room.orphan_notices == 0
    finally:
        await probe.aclose()

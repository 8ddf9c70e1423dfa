"""Added latency per pairing of the Redis store against the in-memory room, same run.

A pairing's decision time: from the newcomer's ``arrive()`` call until both sides know
(the newcomer has Paired and the waiter's replica has its PeerArrived event). In memory
that is one ``Room.arrive`` call; with Redis, two replicas in this process on a
loopback ``redis-server`` (one EVALSHA plus one pub/sub notice). Sequential pairings,
so the figures are latency, not throughput. Run::

    python benchmarks/shared_room_latency.py --pairs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rendezvous.room import Paired as MemoryPaired
from rendezvous.room import Room
from rendezvous.shared_room import Paired, PeerArrived, RoomEvent, SharedRoom
from tcpunch import Endpoint
from testbed.redis_server import RedisServer

WAITER, NEWCOMER = Endpoint("198.51.100.1", 40000), Endpoint("198.51.100.2", 40001)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory_round_trips(pairs: int) -> list[float]:
    room = Room()
    samples = []
    for i in range(pairs):
        name = f"bench_{i}".encode()
        room.arrive(name, "w", WAITER, "v1", 0.0)
        start = time.perf_counter()
        outcome = room.arrive(name, "n", NEWCOMER, "v1", 0.0)
        samples.append(time.perf_counter() - start)
        assert isinstance(outcome, MemoryPaired)
    return samples


async def tcp_round_trips(pairs: int) -> list[float]:
    """Baseline: one request/reply on an open loopback TCP connection, same event loop."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    samples = []
    for _ in range(pairs):
        start = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        samples.append(time.perf_counter() - start)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return samples


async def redis_round_trips(url: str, pairs: int) -> list[float]:
    heard = asyncio.Event()

    def on_event(event: RoomEvent) -> None:
        if isinstance(event, PeerArrived):
            heard.set()

    holder = SharedRoom(url, on_event, replica_id="bench-a", prefix="bench:")
    other = SharedRoom(url, lambda event: None, replica_id="bench-b", prefix="bench:")
    await holder.start(ready_timeout=10)
    await other.start(ready_timeout=10)
    samples = []
    try:
        for i in range(pairs):
            name = f"bench_{i}".encode()
            await holder.arrive(name, "w", WAITER, "v1", 0.0)
            heard.clear()
            start = time.perf_counter()
            outcome = await other.arrive(name, "n", NEWCOMER, "v1", 0.0)
            await heard.wait()
            samples.append(time.perf_counter() - start)
            assert isinstance(outcome, Paired)
    finally:
        await holder.stop()
        await other.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        redis = RedisServer(Path(workdir))
        redis.start()
        try:
            memory = memory_round_trips(args.pairs)
            tcp = asyncio.run(tcp_round_trips(args.pairs))
            shared = asyncio.run(redis_round_trips(redis.url, args.pairs))
        finally:
            redis.stop()
    print(f"pairings: {args.pairs} (sequential), redis-server on loopback")
    rows = (("in-memory Room", memory), ("loopback TCP RTT", tcp), ("Redis, 2 replicas", shared))
    for label, samples in rows:
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{label:>18}: p50 {p50 * 1e6:9.1f} us   p99 {p99 * 1e6:9.1f} us")
    ratio50 = percentile(shared, 0.5) / percentile(memory, 0.5)
    ratio99 = percentile(shared, 0.99) / percentile(memory, 0.99)
    print(f"{'Redis / memory':>18}: p50 {ratio50:9.0f} x    p99 {ratio99:9.0f} x")
    rtt50 = percentile(shared, 0.5) / percentile(tcp, 0.5)
    rtt99 = percentile(shared, 0.99) / percentile(tcp, 0.99)
    print(f"{'Redis / TCP RTT':>18}: p50 {rtt50:9.1f} x    p99 {rtt99:9.1f} x")
    print(f"{'mean added':>18}: {(statistics.mean(shared) - statistics.mean(memory)) * 1e6:.1f} us")


if __name__ == "__main__":
    main()

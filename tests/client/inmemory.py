"""An in-memory Transport: the ranks of one world as threads of this process.

The collective algorithms (fmi_client.collectives, fmi_client.allreduce) run over it
exactly as over punched TCP, so every world size and root is tested in milliseconds.
Messages are copied as the socket transport copies them (arrays byte for byte, other
objects through pickle), so a rank that overwrites a received array or its own input
cannot reach into another rank's memory; ``recv(peer, out)`` fills ``out`` under the
same conditions as ``Channel.recv``.

It lives with the tests, not in fmi_client: users' code is written against the
Communicator (tags, point-to-point, lazy pairing), which this does not emulate, and a
public fake would be one more API to keep stable.
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fmi_client.framing import is_array

#: No single receive in these tests waits longer than this for a message.
RECV_DEADLINE = 30.0


class WorldFailed(RuntimeError):
    """Another rank of the world raised; this rank stops waiting."""


def _copy(obj: Any) -> Any:
    if is_array(obj):
        return np.array(obj, copy=True, order="C")
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class InMemoryWorld:
    """``size`` ranks joined by one FIFO queue per ordered pair of ranks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.failed = threading.Event()
        self.sent: list[int] = [0] * size  # messages each rank sent (a test may check)
        self._queues = {
            (a, b): queue.SimpleQueue[Any]() for a in range(size) for b in range(size) if a != b
        }

    def transport(self, rank: int) -> InMemoryTransport:
        return InMemoryTransport(self, rank)

    def put(self, src: int, dst: int, obj: Any) -> None:
        self.sent[src] += 1
        self._queues[(src, dst)].put(_copy(obj))

    def get(self, src: int, dst: int) -> Any:
        deadline = time.monotonic() + RECV_DEADLINE
        pending = self._queues[(src, dst)]
        while True:
            try:
                return pending.get(timeout=0.05)
            except queue.Empty:
                if self.failed.is_set():
                    raise WorldFailed(f"rank {dst}: another rank failed") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"rank {dst}: nothing from rank {src} in {RECV_DEADLINE} s"
                    ) from None


class InMemoryTransport:
    """Rank ``rank`` of ``world``: a fmi_client.transport.Transport."""

    def __init__(self, world: InMemoryWorld, rank: int) -> None:
        self.world = world
        self.rank = rank
        self.size = world.size

    def send(self, obj: Any, peer: int) -> None:
        assert peer != self.rank and 0 <= peer < self.size, (self.rank, peer)
        self.world.put(self.rank, peer, obj)

    def recv(self, peer: int, out: Any = None) -> Any:
        assert peer != self.rank and 0 <= peer < self.size, (self.rank, peer)
        got = self.world.get(peer, self.rank)
        if (
            is_array(got)
            and out is not None
            and out.dtype.str == got.dtype.str
            and out.nbytes == got.nbytes
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            target = out if out.shape == got.shape else out.reshape(got.shape)
            target[...] = got
            return target
        return got

    def exchange(self, obj: Any, peer: int, out: Any = None) -> Any:
        self.send(obj, peer)  # queues are unbounded: sending first never blocks
        return self.recv(peer, out)


def run_world(size: int, rank_main: Callable[[InMemoryTransport], Any]) -> list[Any]:
    """``rank_main(transport)`` on every rank of a new world, one thread each; the
    results in rank order. The first exception raised by any rank is re-raised here."""
    world = InMemoryWorld(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def body(rank: int) -> None:
        try:
            results[rank] = rank_main(world.transport(rank))
        except BaseException as exc:
            errors.append(exc)
            world.failed.set()

    threads = [
        threading.Thread(target=body, args=(rank,), name=f"rank-{rank}", daemon=True)
        for rank in range(size)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RECV_DEADLINE * 2)
    assert not any(thread.is_alive() for thread in threads), "a rank thread did not end"
    firsts = [exc for exc in errors if not isinstance(exc, WorldFailed)] or errors
    if firsts:
        raise firsts[0]
    return results

"""Collectives where every rank sends something different to every other rank (alltoall,
reduce_scatter), the exclusive scan, and the buffer versions of the collectives that fill
a caller's preallocated numpy array (mpi4py's uppercase calls).

Pairwise rounds: in each round of the circle method (``links.round_robin``) a rank
exchanges full duplex with at most one peer, so every step waits only on a peer that is
about to exchange with it (no cycles on a lazily paired mesh) and no rank's socket buffer
has to absorb a whole message. Folds are in rank order (non-commutative ops work).
"""

from __future__ import annotations

import functools
from typing import Any

from fmi_client.framing import np
from fmi_client.links import round_robin
from fmi_client.ops import Op
from fmi_client.transport import Transport


@functools.lru_cache(maxsize=64)
def schedule(size: int, rank: int) -> tuple[int, ...]:
    """This rank's peer in every round of the circle method (rounds it sits out skipped)."""
    peers = []
    for matches in round_robin(size):
        for a, b in matches:
            if rank in (a, b):
                peers.append(b if a == rank else a)
    return tuple(peers)


def alltoall(transport: Transport, objs: list[Any]) -> list[Any]:
    """Item ``i`` of every rank's ``objs`` on rank ``i``, as a list in rank order."""
    rank = transport.rank
    got: list[Any] = [None] * transport.size
    got[rank] = objs[rank]
    for peer in schedule(transport.size, rank):
        got[peer] = transport.exchange(objs[peer], peer)
    return got


def exscan(transport: Transport, obj: Any, op: Op) -> Any:
    """Exclusive prefix: ranks 0..rank-1's objects folded in rank order (None on rank 0)."""
    n, rank = transport.size, transport.rank
    result: Any = None
    partial = obj
    mask = 1
    while mask < n:
        dst = rank ^ mask
        if dst < n:
            other = transport.exchange(partial, dst)
            if dst < rank:
                result = other if result is None else op(other, result)
                partial = op(other, partial)
            else:
                partial = op(partial, other)
        mask <<= 1
    return result


def reduce_scatter(transport: Transport, blocks: list[Any], op: Op) -> Any:
    """Block ``rank`` of every rank's ``blocks``, folded in rank order."""
    got = alltoall(transport, blocks)
    return functools.reduce(op, got)


# -- into preallocated arrays (checked by the caller: flat, contiguous, sizes agree) -------


def land(got: Any, into: Any, peer: int, what: str) -> None:
    """Make sure ``got`` (what arrived from ``peer``) is in ``into``; refuse a mismatch."""
    if got is into or (got.size == into.size and np.may_share_memory(got, into)):
        return
    if getattr(got, "dtype", None) == into.dtype and got.size == into.size:
        into[...] = got.reshape(-1)
        return
    sent = f"{got.size} x {got.dtype}" if hasattr(got, "dtype") else type(got).__name__
    raise ValueError(
        f"{what}: rank {peer} sent {sent} where this rank's buffer holds {into.size} x "
        f"{into.dtype}: every rank must pass buffers of matching sizes and dtypes"
    )


def bcast_into(transport: Transport, buf: Any, root: int) -> None:
    """Root's ``buf`` into every rank's ``buf`` (binomial tree)."""
    n, rel = transport.size, (transport.rank - root) % transport.size
    mask = 1
    while mask < n:
        if rel & mask:
            parent = (rel - mask + root) % n
            land(transport.recv(parent, buf), buf, parent, "Bcast")
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:
        if rel + mask < n:
            transport.send(buf, (rel + mask + root) % n)
        mask >>= 1


def allgather_into(transport: Transport, send: Any, recv: Any) -> None:
    """Every rank's ``send`` into block ``rank`` of every rank's ``recv``."""
    size, rank, count = transport.size, transport.rank, send.size
    recv[rank * count : (rank + 1) * count] = send
    for peer in schedule(size, rank):
        into = recv[peer * count : (peer + 1) * count]
        land(transport.exchange(send, peer, into), into, peer, "Allgather")


def alltoall_into(transport: Transport, send: Any, recv: Any) -> None:
    """Block ``i`` of every rank's ``send`` into block ``rank`` of rank ``i``'s ``recv``."""
    size, rank = transport.size, transport.rank
    count = send.size // size
    recv[rank * count : (rank + 1) * count] = send[rank * count : (rank + 1) * count]
    for peer in schedule(size, rank):
        into = recv[peer * count : (peer + 1) * count]
        got = transport.exchange(send[peer * count : (peer + 1) * count], peer, into)
        land(got, into, peer, "Alltoall")


def reduce_scatter_into(
    transport: Transport, send: Any, recv: Any, counts: list[int], op: Op, scratch: Any
) -> None:
    """Slice ``rank`` (``counts`` long) of every rank's ``send``, folded in rank order,
    into ``recv``. ``scratch`` holds ``(size - 1) * counts[rank]`` items of send's dtype."""
    size, rank = transport.size, transport.rank
    starts = [sum(counts[:i]) for i in range(size + 1)]
    mine = counts[rank]
    parts: list[Any] = [None] * size
    parts[rank] = send[starts[rank] : starts[rank + 1]]
    for slot, peer in enumerate(schedule(size, rank)):
        into = scratch[slot * mine : (slot + 1) * mine]
        got = transport.exchange(send[starts[peer] : starts[peer + 1]], peer, into)
        land(got, into, peer, "Reduce_scatter")
        parts[peer] = into
    if size == 1 or not op.elementwise:
        recv[...] = functools.reduce(op, parts).reshape(-1)
        return
    op(parts[0], parts[1], out=recv)
    for part in parts[2:]:
        op(recv, part, out=recv)


__all__ = [
    "allgather_into",
    "alltoall",
    "alltoall_into",
    "bcast_into",
    "exscan",
    "land",
    "reduce_scatter",
    "reduce_scatter_into",
    "schedule",
]

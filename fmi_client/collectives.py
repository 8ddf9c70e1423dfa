"""Collective algorithms over a Transport, as plain functions of one rank's view.

Each only ever blocks on a message that the peer's algorithm is about to send, so lazily
made connections never wait on each other in a cycle: binomial trees (bcast, reduce,
gather, scatter), recursive doubling (barrier, scan and small allreduce, in
``fmi_client.allreduce``). Results are folded in rank order, so non-commutative
operators work. Ops are anything ``fmi_client.ops.as_op`` takes. Other arguments are
checked by the caller (the Communicator) beforehand.
"""

from __future__ import annotations

from typing import Any

from fmi_client.allreduce import allreduce, allreduce_doubling, fold
from fmi_client.framing import is_array
from fmi_client.ops import Op, OpLike, as_op
from fmi_client.transport import Transport, recv_items, send_items

#: The op of barrier(): nothing to fold, only the messages matter.
_NOTHING = Op(lambda a, b: None, commute=True)


def barrier(transport: Transport) -> None:
    """Return once every rank has called barrier()."""
    allreduce_doubling(transport, None, _NOTHING)


def bcast(transport: Transport, obj: Any, root: int) -> Any:
    """Root's ``obj`` on every rank (binomial tree)."""
    return _bcast(transport, obj, root, many=False)


def _bcast(transport: Transport, obj: Any, root: int, *, many: bool) -> Any:
    n, rel = transport.size, (transport.rank - root) % transport.size
    mask = 1
    while mask < n:
        if rel & mask:
            parent = (rel - mask + root) % n
            obj = recv_items(transport, parent) if many else transport.recv(parent)
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:
        if rel + mask < n:
            child = (rel + mask + root) % n
            if many:
                send_items(transport, obj, child)
            else:
                transport.send(obj, child)
        mask >>= 1
    return obj


def gather(transport: Transport, obj: Any, root: int) -> list[Any] | None:
    """On root, the list of every rank's ``obj`` in rank order; None elsewhere."""
    items = _gather(transport, obj, root)
    if transport.rank != root:
        return None
    n = transport.size
    return [items[(r - root) % n] for r in range(n)]


def _gather(transport: Transport, obj: Any, root: int) -> list[Any]:
    """Binomial tree; returns the objects of our subtree in relative-rank order."""
    n, rel = transport.size, (transport.rank - root) % transport.size
    items = [obj]
    mask = 1
    while mask < n:
        if rel & mask:
            send_items(transport, items, (rel - mask + root) % n)
            break
        if rel + mask < n:
            items.extend(recv_items(transport, (rel + mask + root) % n))
        mask <<= 1
    return items


def allgather(transport: Transport, obj: Any) -> list[Any]:
    """The list of every rank's ``obj``, in rank order, on every rank."""
    items = _gather(transport, obj, 0)
    gathered: list[Any] = _bcast(transport, items if transport.rank == 0 else None, 0, many=True)
    return gathered


def scatter(transport: Transport, objs: list[Any] | None, root: int) -> Any:
    """Item ``i`` of root's ``objs`` (one per rank, checked by the caller) on rank ``i``."""
    n, rel = transport.size, (transport.rank - root) % transport.size
    if rel == 0:
        assert objs is not None and len(objs) == n, "the caller checks root's objs"
        block = [objs[(i + root) % n] for i in range(n)]
        span = 1
        while span < n:
            span <<= 1
    else:
        span = rel & -rel
        parent = (rel - span + root) % n
        block = recv_items(transport, parent)
    mask = span >> 1
    while mask > 0:
        if rel + mask < n:
            send_items(transport, block[mask : 2 * mask], (rel + mask + root) % n)
        mask >>= 1
    return block[0]


def reduce(
    transport: Transport, obj: Any, op: OpLike, root: int, *, commutative: bool = True
) -> Any:
    """On root, every rank's ``obj`` folded with ``op`` (in rank order); None elsewhere.

    Unless both ``commutative`` and ``op.commute`` hold, the fold happens at rank 0 (where
    relative order is rank order) and the result is handed to root.
    """
    op, rank = (op if type(op) is Op else as_op(op)), transport.rank
    if (commutative and op.commute) or root == 0:
        result = _reduce(transport, obj, op, root)
    else:
        result = _reduce(transport, obj, op, 0)
        if rank == 0:
            transport.send(result, root)
        elif rank == root:
            result = transport.recv(0)
    return result if rank == root else None


def _reduce(transport: Transport, obj: Any, op: Op, root: int) -> Any:
    n, rel = transport.size, (transport.rank - root) % transport.size
    acc = obj
    owned = False  # whether acc is an array we may overwrite
    mask = 1
    while mask < n:
        if rel & mask:
            transport.send(acc, (rel - mask + root) % n)
            return None
        if rel + mask < n:
            other = transport.recv((rel + mask + root) % n)
            acc, owned = fold(op, acc, other, owned)
        mask <<= 1
    return acc


def scan(transport: Transport, obj: Any, op: OpLike) -> Any:
    """Inclusive prefix: ranks 0..rank's objects folded with ``op`` in rank order."""
    op = op if type(op) is Op else as_op(op)
    n, rank = transport.size, transport.rank
    result, partial = obj, obj
    mask = 1
    while mask < n:
        dst = rank ^ mask
        if dst < n:
            other = transport.exchange(partial, dst)
            if dst < rank:
                partial = op(other, partial)
                result = op(other, result)
            else:
                partial = op(partial, other)
        mask <<= 1
    if is_array(result) and result is obj:
        result = result.copy()
    return result


__all__ = [
    "allgather",
    "allreduce",
    "barrier",
    "bcast",
    "gather",
    "reduce",
    "scan",
    "scatter",
]

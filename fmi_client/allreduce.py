"""Allreduce over a Transport: recursive doubling, or for large arrays reduce-scatter by
recursive halving + allgather by recursive doubling (bandwidth-optimal).

Every step only ever blocks on a message the peer's algorithm is about to send, and
results are folded in rank order (left operand from the lower ranks), so
non-commutative operators work. Arrays we allocated are overwritten in place.
"""

from __future__ import annotations

from typing import Any

from fmi_client.framing import is_array, np
from fmi_client.ops import Op, OpLike, as_op
from fmi_client.transport import Transport

#: Arrays at least this large (and reduced with a named op) use reduce-scatter + allgather.
LARGE_ALLREDUCE = 64 * 1024


class Scratch:
    """A reusable receive buffer (fresh 32 MiB buffers cost page faults every call)."""

    def __init__(self) -> None:
        self._buf: Any = None

    def get(self, size: int, dtype: Any) -> Any:
        """An array of ``size`` items of ``dtype`` over the buffer (grown if too small)."""
        nbytes = size * np.dtype(dtype).itemsize
        if self._buf is None or self._buf.nbytes < nbytes:
            self._buf = np.empty(nbytes, dtype=np.uint8)
        return self._buf[:nbytes].view(dtype)


def fold(op: Op, left: Any, right: Any, left_owned: bool) -> tuple[Any, bool]:
    """``left op right`` and whether we own the result; reuses left's buffer when we own
    it and types agree."""
    if (
        left_owned
        and op.elementwise
        and is_array(left)
        and is_array(right)
        and left.shape == right.shape
        and left.dtype == right.dtype
    ):
        return op(left, right, out=left), True
    result = op(left, right)
    return result, is_array(result) and result is not left and result is not right


def usable_out(out: Any, obj: Any) -> Any:
    """``out`` if an array result of ``obj`` may be written into it, else None."""
    if (
        out is not None
        and is_array(out)
        and is_array(obj)
        and out.dtype == obj.dtype
        and out.size == obj.size
        and out.flags.c_contiguous
        and out.flags.writeable
        and not np.shares_memory(out, obj)
    ):
        return out
    return None


def allreduce(
    transport: Transport, obj: Any, op: OpLike, *, out: Any = None, scratch: Scratch | None = None
) -> Any:
    """Every rank's ``obj`` folded with ``op`` in rank order, on every rank.

    ``out`` (checked by ``usable_out``) receives an array result and is returned; large
    arrays then need no fresh result array. ``scratch`` keeps its buffer between calls.
    """
    op = op if type(op) is Op else as_op(op)
    into = usable_out(out, obj)
    size = transport.size
    pof2 = 1 << (size.bit_length() - 1)
    if (
        op.elementwise
        and is_array(obj)
        and obj.nbytes >= LARGE_ALLREDUCE
        and obj.size >= pof2
        and size > 1
    ):
        return allreduce_large(transport, obj, op, into, scratch or Scratch())
    result = allreduce_doubling(transport, obj, op)
    if into is not None and is_array(result) and result.size == into.size:
        into.reshape(-1)[...] = result.reshape(-1)
        return into
    return result


def allreduce_doubling(transport: Transport, obj: Any, op: Op) -> Any:
    """Recursive doubling; extra ranks (non-power-of-two) fold into a neighbour first."""
    n, rank = transport.size, transport.rank
    if n == 1:
        return obj.copy() if is_array(obj) else obj
    send, recv, exchange = transport.send, transport.recv, transport.exchange
    pof2 = 1 << (n.bit_length() - 1)
    rem = n - pof2
    acc, owned = obj, False
    if rank < 2 * rem:
        if rank % 2 == 0:
            send(acc, rank + 1)
            return recv(rank + 1)
        acc, owned = fold(op, recv(rank - 1), acc, True)
        newrank = rank // 2
    else:
        newrank = rank - rem
    mask = 1
    while mask < pof2:
        newdst = newrank ^ mask
        dst = newdst * 2 + 1 if newdst < rem else newdst + rem
        other = exchange(acc, dst)
        if newdst < newrank:
            acc, owned = fold(op, other, acc, True)
        else:
            acc, owned = fold(op, acc, other, owned)
        mask <<= 1
    if rank < 2 * rem:
        send(acc, rank - 1)
    if is_array(acc) and not owned:
        acc = acc.copy()
    return acc


def allreduce_large(transport: Transport, array: Any, op: Op, out: Any, scratch: Scratch) -> Any:
    """Reduce-scatter (recursive halving) + allgather (recursive doubling) of an array.

    Every exchange is full duplex. The input is never copied: the first step sends from
    it and folds it with what arrives straight into the result (``out`` if given), whose
    other half the allgather fills later. ``op`` must be element-wise.
    """
    n, rank = transport.size, transport.rank
    send, recv, exchange = transport.send, transport.recv, transport.exchange
    src = np.ascontiguousarray(array).reshape(-1)  # a view unless array is strided
    if out is not None:  # checked by usable_out
        acc = out.reshape(-1)
        shaped = out
    else:
        acc = np.empty(src.size, dtype=src.dtype)
        shaped = acc.reshape(array.shape)
    pof2 = 1 << (n.bit_length() - 1)
    rem = n - pof2
    if rank < 2 * rem and rank % 2 == 0:
        send(src, rank + 1)
        recv(rank + 1, acc)
        return shaped
    if rank < 2 * rem:
        other = recv(rank - 1, acc)
        op(other, src, out=acc)
        src = acc
        newrank = rank // 2
    else:
        newrank = rank - rem
    edges = [i * acc.size // pof2 for i in range(pof2 + 1)]
    buffer = scratch.get(edges[pof2 // 2] + acc.size % 2 + 1, acc.dtype)
    lo, hi = 0, pof2
    steps = []
    mask = 1
    while mask < pof2:
        newdst = newrank ^ mask
        dst = newdst * 2 + 1 if newdst < rem else newdst + rem
        mid = (lo + hi) // 2
        keep, give = ((lo, mid), (mid, hi)) if newrank < newdst else ((mid, hi), (lo, mid))
        start, stop = edges[keep[0]], edges[keep[1]]
        mine, into = src[start:stop], acc[start:stop]
        theirs = buffer[: mine.size]
        theirs = exchange(src[edges[give[0]] : edges[give[1]]], dst, theirs)
        if newdst < newrank:
            op(theirs, mine, out=into)
        else:
            op(mine, theirs, out=into)
        src = acc  # from the second step on, everything we hold is in acc
        steps.append((dst, keep, give))
        lo, hi = keep
        mask <<= 1
    for dst, keep, give in reversed(steps):
        into = acc[edges[give[0]] : edges[give[1]]]
        got = exchange(acc[edges[keep[0]] : edges[keep[1]]], dst, into)
        if got is not into and got.size:
            into[...] = got
    if rank < 2 * rem:
        send(acc, rank - 1)
    return shaped

"""mpi4py's uppercase buffer calls for numpy arrays, mixed into the Communicator: results
land in the caller's preallocated array (no result allocation, no pickling).

A buffer is a numpy array, or a list/tuple whose first item is one (mpi4py's ``[buf,
MPI.FLOAT]``; the datatype is read from the array). Receive buffers must be
C-contiguous and writeable. Sizes and dtypes are checked against each other before any
message moves; a peer whose buffer disagrees makes the receiving rank raise (naming the
rank and both sizes) and close its connections, so nobody waits forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from fmi_client import exchanges
from fmi_client.allreduce import allreduce
from fmi_client.framing import is_array, np
from fmi_client.ops import SUM, OpLike, as_op
from fmi_client.p2p import ANY_SOURCE, ANY_TAG, Status

if TYPE_CHECKING:
    from fmi_client.communicator import Communicator


class _InPlace:
    def __repr__(self) -> str:
        return "IN_PLACE"


#: As sendbuf of Allreduce / Reduce (at the root): the input is read from recvbuf.
IN_PLACE: Any = _InPlace()


def flat(buf: Any, what: str, *, writeable: bool = False) -> Any:
    """``buf`` as a flat array over the same memory (a copy only for a strided send)."""
    if isinstance(buf, (list, tuple)) and buf:
        buf = buf[0]
    if not is_array(buf):
        raise TypeError(f"{what} must be a numpy array of numbers, got {type(buf).__name__}")
    if writeable:
        if not (buf.flags.c_contiguous and buf.flags.writeable):
            raise ValueError(f"{what} must be a C-contiguous, writeable array")
        return buf.reshape(-1)
    return np.ascontiguousarray(buf).reshape(-1)


def _agree(send: Any, recv: Any, call: str, factor: int = 1) -> None:
    if send.dtype != recv.dtype or send.size * factor != recv.size:
        times = f"{factor} x " if factor != 1 else ""
        raise ValueError(
            f"{call}: recvbuf holds {recv.size} x {recv.dtype} but needs {times}"
            f"{send.size} x {send.dtype} (sendbuf)"
        )


class BufferCalls:
    """Send, Recv, Sendrecv, Bcast, Reduce, Allreduce, Allgather, Alltoall, Reduce_scatter."""

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        comm = cast("Communicator", self)
        flat(buf, "Send buf")  # refuses what is not an array
        comm.send(_first(buf), dest, tag)

    def Recv(
        self,
        buf: Any,
        source: int = ANY_SOURCE,
        tag: int = ANY_TAG,
        status: Status | None = None,
    ) -> None:
        comm = cast("Communicator", self)
        into = flat(buf, "Recv buf", writeable=True)
        status = status if status is not None else Status()
        got = comm.recv(source, tag, status, out=into)
        exchanges.land(_as_array(got), into, status.source, "Recv")

    def Sendrecv(
        self,
        sendbuf: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = ANY_SOURCE,
        recvtag: int = ANY_TAG,
        status: Status | None = None,
    ) -> None:
        comm = cast("Communicator", self)
        into = flat(recvbuf, "Sendrecv recvbuf", writeable=True)
        send = flat(sendbuf, "Sendrecv sendbuf")
        status = status if status is not None else Status()
        got = comm.sendrecv(send, dest, sendtag, source, recvtag, status, out=into)
        exchanges.land(_as_array(got), into, status.source, "Sendrecv")

    def Bcast(self, buf: Any, root: int = 0) -> None:
        comm = cast("Communicator", self)
        into = flat(buf, "Bcast buf", writeable=True)
        comm._check_peer(root, "root")
        with comm._guard():
            exchanges.bcast_into(comm._links, into, root)

    def Reduce(self, sendbuf: Any, recvbuf: Any, op: OpLike = SUM, root: int = 0) -> None:
        comm = cast("Communicator", self)
        comm._check_peer(root, "root")
        folder = as_op(op)
        at_root = comm.rank == root
        if sendbuf is IN_PLACE:
            if not at_root:
                raise ValueError("Reduce: IN_PLACE is for the root's sendbuf only")
            send = flat(recvbuf, "Reduce recvbuf").copy()
        else:
            send = flat(sendbuf, "Reduce sendbuf")
        into = flat(recvbuf, "Reduce recvbuf", writeable=True) if at_root else None
        if into is not None:
            _agree(send, into, "Reduce")
        with comm._guard():
            got = comm.reduce(send, folder, root)
        if into is not None:
            exchanges.land(_as_array(got), into, root, "Reduce")

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: OpLike = SUM) -> None:
        comm = cast("Communicator", self)
        folder = as_op(op)
        into = flat(recvbuf, "Allreduce recvbuf", writeable=True)
        send = into.copy() if sendbuf is IN_PLACE else flat(sendbuf, "Allreduce sendbuf")
        _agree(send, into, "Allreduce")
        if np.may_share_memory(send, into):
            send = send.copy()
        with comm._guard():
            got = allreduce(comm._links, send, folder, out=into, scratch=comm._scratch)
            exchanges.land(_as_array(got), into, comm.rank, "Allreduce")

    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None:
        comm = cast("Communicator", self)
        send = flat(sendbuf, "Allgather sendbuf")
        into = flat(recvbuf, "Allgather recvbuf", writeable=True)
        _agree(send, into, "Allgather", comm.size)
        with comm._guard():
            exchanges.allgather_into(comm._links, send, into)

    def Alltoall(self, sendbuf: Any, recvbuf: Any) -> None:
        comm = cast("Communicator", self)
        send = flat(sendbuf, "Alltoall sendbuf")
        into = flat(recvbuf, "Alltoall recvbuf", writeable=True)
        _agree(send, into, "Alltoall")
        if send.size % comm.size:
            raise ValueError(
                f"Alltoall: sendbuf's {send.size} items do not split into {comm.size} blocks"
            )
        with comm._guard():
            exchanges.alltoall_into(comm._links, send, into)

    def Reduce_scatter(
        self,
        sendbuf: Any,
        recvbuf: Any,
        recvcounts: Any = None,
        op: OpLike = SUM,
    ) -> None:
        """``recvcounts`` None: every rank gets recvbuf's size (Reduce_scatter_block)."""
        comm = cast("Communicator", self)
        folder = as_op(op)
        send = flat(sendbuf, "Reduce_scatter sendbuf")
        into = flat(recvbuf, "Reduce_scatter recvbuf", writeable=True)
        n = comm.size
        counts = [into.size] * n if recvcounts is None else [int(c) for c in recvcounts]
        if len(counts) != n or any(c < 0 for c in counts) or counts[comm.rank] != into.size:
            raise ValueError(
                f"Reduce_scatter: recvcounts must be {n} counts >= 0 with this rank's equal to "
                f"recvbuf's size {into.size}, got {counts}"
            )
        if send.dtype != into.dtype or send.size != sum(counts):
            raise ValueError(
                f"Reduce_scatter: sendbuf holds {send.size} x {send.dtype} but needs "
                f"{sum(counts)} x {into.dtype} (the sum of recvcounts)"
            )
        scratch = np.empty(max(n - 1, 0) * into.size, dtype=into.dtype)
        with comm._guard():
            exchanges.reduce_scatter_into(comm._links, send, into, counts, folder, scratch)


def _first(buf: Any) -> Any:
    return buf[0] if isinstance(buf, (list, tuple)) and buf else buf


def _as_array(got: Any) -> Any:
    if not is_array(got):
        raise ValueError(f"a buffer call received a {type(got).__name__}, not an array")
    return got


__all__ = ["IN_PLACE", "BufferCalls", "flat"]

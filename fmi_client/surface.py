"""The rest of mpi4py's lowercase (object) surface, mixed into the Communicator:
sendrecv, isend/irecv, alltoall, exscan, reduce_scatter, Split and the Get_* accessors.

Argument errors are raised here, before any message moves, so a wrong call fails at the
caller and leaves its peers and the communicator untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from fmi_client import exchanges, p2p
from fmi_client.ops import SUM, OpLike, as_op
from fmi_client.p2p import ANY_SOURCE, ANY_TAG, UNDEFINED, Request, Status

if TYPE_CHECKING:
    from fmi_client.communicator import Communicator


class ObjectCalls:
    """mpi4py's lowercase calls beyond send/recv and the classic collectives."""

    def Get_rank(self) -> int:
        comm = cast("Communicator", self)
        return comm.rank

    def Get_size(self) -> int:
        comm = cast("Communicator", self)
        return comm.size

    def Barrier(self) -> None:
        comm = cast("Communicator", self)
        comm.barrier()

    def isend(self, obj: Any, dest: int, tag: int = 0) -> Request:
        """Start sending ``obj``; the Request's ``wait()`` returns once it is handed over."""
        comm = cast("Communicator", self)
        return p2p.isend(comm, obj, dest, tag)

    def irecv(self, source: int = ANY_SOURCE, tag: int = ANY_TAG, *, out: Any = None) -> Request:
        """A Request whose ``wait()`` returns the next object from ``source`` with ``tag``."""
        comm = cast("Communicator", self)
        return p2p.irecv(comm, source, tag, out)

    def sendrecv(
        self,
        sendobj: Any,
        dest: int,
        sendtag: int = 0,
        source: int = ANY_SOURCE,
        recvtag: int = ANY_TAG,
        status: Status | None = None,
        *,
        out: Any = None,
    ) -> Any:
        """Send ``sendobj`` to ``dest`` while receiving from ``source`` (no deadlock when
        every rank does it at once, whatever the size)."""
        comm = cast("Communicator", self)
        p2p.check_rank(comm, source, "source", any_source=True)
        p2p.check_tag(recvtag, receiving=True)
        request = p2p.isend(comm, sendobj, dest, sendtag)
        got = comm.recv(source, recvtag, status, out=out)
        request.wait()
        return got

    def alltoall(self, sendobj: Sequence[Any]) -> list[Any]:
        """Item ``i`` of every rank's ``sendobj`` (one per rank) on rank ``i``, in rank order."""
        comm = cast("Communicator", self)
        if len(sendobj) != comm.size:
            raise ValueError(f"alltoall needs one item per rank ({comm.size}), got {len(sendobj)}")
        with comm._guard():
            return exchanges.alltoall(comm._links, list(sendobj))

    def exscan(self, sendobj: Any, op: OpLike = SUM) -> Any:
        """Ranks 0..rank-1's objects folded with ``op`` in rank order; None on rank 0."""
        comm = cast("Communicator", self)
        folder = as_op(op)
        with comm._guard():
            return exchanges.exscan(comm._links, sendobj, folder)

    def reduce_scatter(
        self,
        sendobj: Sequence[Any],
        recvcounts: Sequence[int] | None = None,
        op: OpLike = SUM,
    ) -> Any:
        """Item ``rank`` of every rank's ``sendobj`` folded with ``op`` (in rank order).

        With ``recvcounts``, ``sendobj`` has ``sum(recvcounts)`` items and rank ``i`` gets
        the list of the folds of its ``recvcounts[i]`` items.
        """
        comm = cast("Communicator", self)
        folder = as_op(op)
        n = comm.size
        if recvcounts is None:
            counts, single = [1] * n, True
        else:
            counts, single = [int(c) for c in recvcounts], False
            if len(counts) != n or any(c < 0 for c in counts):
                raise ValueError(f"recvcounts must be {n} counts >= 0, got {list(recvcounts)}")
        if len(sendobj) != sum(counts):
            raise ValueError(
                f"reduce_scatter needs {sum(counts)} items (sum of recvcounts), got {len(sendobj)}"
            )
        items, starts = list(sendobj), [sum(counts[:i]) for i in range(n + 1)]
        blocks = [items[starts[i] : starts[i + 1]] for i in range(n)]
        with comm._guard():
            got = exchanges.alltoall(comm._links, blocks)
        folded = [folder_all(folder, [block[j] for block in got]) for j in range(counts[comm.rank])]
        return folded[0] if single else folded

    def Split(self, color: int = 0, key: int = 0) -> Communicator | None:
        """A new Communicator of the ranks that passed the same ``color``, ranked by
        ``key`` (ties: by rank here); None for ``color=UNDEFINED``. Collective.

        Its pairing names are this communicator's name, ``#`` and the split's number and
        color (so never one of ours, nor one of another color's or another split's); it
        keeps this one's settings (timeouts, credential, secret, ``relay``).
        """
        comm = cast("Communicator", self)
        from fmi_client.communicator import Communicator

        p2p.check_color(color, key)
        comm._splits += 1
        keys = comm.allgather((color, key))
        if color == UNDEFINED:
            return None
        new_rank, group = p2p.split_groups(keys, comm.rank)
        host = f"[{comm.host}]" if ":" in comm.host else comm.host
        return Communicator(
            new_rank,
            len(group),
            f"{host}:{comm.port}",
            f"{comm.comm_name}#s{comm._splits}c{color}",
            timeout=comm.timeout,
            protocol=comm.protocol,
            punch_timeout=comm.punch_timeout,
            op_timeout=comm.op_timeout,
            credential=comm._credential,
            secret=comm._security.secret,
            encrypt=comm._security.encrypt,
            allow_pickle=comm._security.allow_pickle,
            max_message_bytes=comm._security.max_message_bytes,
            relay=comm.relay,
            nat=comm.nat,
            discovery_port=comm.discovery_port,
        )


def folder_all(op: Any, values: list[Any]) -> Any:
    """``values`` folded with ``op`` left to right."""
    acc = values[0]
    for value in values[1:]:
        acc = op(acc, value)
    return acc


__all__ = ["ANY_SOURCE", "ANY_TAG", "UNDEFINED", "ObjectCalls", "Request", "Status"]

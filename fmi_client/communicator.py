"""Communicator: mpi4py-style point-to-point and collectives between ranks over punched TCP.

Each pair of ranks shares one connection, made the first time they talk (pair() under a
name unique to the communicator and the pair) and reused both ways. Collectives use
logarithmic algorithms that only ever block on messages that the peer's algorithm is
about to send, so lazily made connections never wait on each other in a cycle:
binomial trees (bcast, reduce, gather, scatter), recursive doubling (small allreduce,
barrier, scan), and reduce-scatter by recursive halving + allgather by recursive doubling
for large arrays. Results are folded in rank order, so non-commutative operators work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fmi_client import ops
from fmi_client.address import check_int, parse_rendezvous
from fmi_client.channel import Channel
from fmi_client.errors import (
    FmiClientError,
    NameTooLong,
    PeerLost,
    PeerNeverArrived,
    PunchFailed,
)
from fmi_client.framing import is_array, np
from fmi_client.punch import PUNCH_WINDOW, pair
from tcpunch import V1_MAX_NAME, V2_NAME_FIELD

log = logging.getLogger("fmi_client")

#: Arrays at least this large (and reduced with a named op) use reduce-scatter + allgather.
LARGE_ALLREDUCE = 64 * 1024
_COLL = -1  # the tag of collective traffic; user tags are >= 0


def round_robin(world_size: int) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint rank pairs covering every pair once (the circle method)."""
    players = world_size + (world_size % 2)
    rounds = []
    for r in range(players - 1):
        matches = []
        for i in range(players // 2):
            a = (r + i) % (players - 1)
            b = players - 1 if i == 0 else (r - i) % (players - 1)
            if a < world_size and b < world_size:
                matches.append((min(a, b), max(a, b)))
        rounds.append(matches)
    return rounds


class Communicator:
    """Rank ``rank`` of ``world_size`` ranks that meet at the ``rendezvous`` server.

    ``rendezvous`` is ``"host:port"`` (``"host"`` alone means port 10000); ``comm_name``
    names this job's communicator and must differ between jobs that share a server (it
    has no default for that reason: two jobs with the same name would pair their ranks
    with each other). ``rank`` and ``world_size`` are ints (bools are refused).

    ``timeout`` bounds each pairing: a rank that has not arrived by then (a cold start
    gone wrong) raises PeerNeverArrived naming it. ``protocol`` is the rendezvous
    protocol ("v2" or "v1"). ``op_timeout`` (seconds, default none) bounds every wait
    for data from a peer: a peer that is alive but silent that long raises PeerLost
    (dead peers are detected without it, by EOF or reset).
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        rendezvous: str,
        comm_name: str,
        *,
        timeout: float = 120.0,
        protocol: str = "v2",
        punch_timeout: float = PUNCH_WINDOW,
        op_timeout: float | None = None,
    ) -> None:
        rank = check_int(rank, "rank")
        world_size = check_int(world_size, "world_size")
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        if not comm_name:
            raise ValueError("comm_name must not be empty")
        self.rank = rank
        self.size = world_size
        self.comm_name = comm_name
        self.host, self.port = parse_rendezvous(rendezvous)
        self.timeout = timeout
        self.protocol = protocol
        self.punch_timeout = punch_timeout
        self.op_timeout = op_timeout
        limit = V2_NAME_FIELD - 1 if protocol == "v2" else V1_MAX_NAME
        longest = self.pairing_name(max(world_size - 2, 0), world_size - 1)
        if len(longest.encode("utf-8")) > limit:
            raise NameTooLong(
                f"pairing names such as {longest!r} take {len(longest.encode())} bytes, over the "
                f"{limit}-byte limit of protocol {protocol}; use a shorter comm_name"
            )
        self._channels: dict[int, Channel] = {}
        self._lock = threading.Lock()
        self._self_queue: dict[int, deque[Any]] = defaultdict(deque)
        self._broken: BaseException | None = None
        self._closed = False
        self._scratch_buf: Any = None

    # -- connections ---------------------------------------------------------------------

    def pairing_name(self, a: int, b: int) -> str:
        """The rendezvous name of ranks a and b: comm_name, '#', lower rank, '-', higher.

        Everything after the last '#' is two numbers, so distinct (comm_name, pair)
        never share a name (FMI's ``comm_name + "1_11"`` could).
        """
        lo, hi = min(a, b), max(a, b)
        return f"{self.comm_name}#{lo}-{hi}"

    def _channel(self, peer: int) -> Channel:
        channel = self._channels.get(peer)
        if channel is not None:
            return channel
        if self._closed:
            raise FmiClientError(f"rank {self.rank}: the communicator is closed")
        if self._broken is not None:
            raise FmiClientError(
                f"rank {self.rank}: the communicator is unusable after an earlier failure: "
                f"{self._broken}"
            )
        name = self.pairing_name(self.rank, peer)
        started = time.monotonic()
        try:
            sock = pair(
                name,
                self.host,
                self.port,
                timeout=self.timeout,
                protocol=self.protocol,
                punch_timeout=self.punch_timeout,
            )
        except PeerNeverArrived as exc:
            raise PeerNeverArrived(
                f"rank {self.rank}: rank {peer} never arrived (pairing {name!r} at "
                f"{self.host}:{self.port}, waited {time.monotonic() - started:.1f} s of "
                f"timeout={self.timeout:g}). Did rank {peer} start, with the same comm_name "
                "and world size?",
                name=name,
                rank=peer,
            ) from exc
        except PunchFailed as exc:
            raise PunchFailed(f"rank {self.rank} and rank {peer}: {exc}") from exc
        if self.op_timeout is not None:
            sock.settimeout(self.op_timeout)
        channel = Channel(sock, self.rank, peer)
        with self._lock:
            if self._closed:
                channel.close()
                raise FmiClientError(f"rank {self.rank}: the communicator is closed")
            self._channels[peer] = channel
        log.debug(
            "rank %d: connected to rank %d in %.3f s", self.rank, peer, time.monotonic() - started
        )
        return channel

    def connect_all(self, *, concurrency: int = 8) -> None:
        """Connect to every other rank now, ``concurrency`` pairings at a time.

        Pairings are started in the same global order on every rank (rounds of disjoint
        pairs, the circle method), so the earliest pending pairing always has both of its
        ranks trying: no deadlock, whatever the window. Threads end before this returns.
        """
        mine = [
            b if a == self.rank else a
            for matches in round_robin(self.size)
            for a, b in matches
            if self.rank in (a, b) and (b if a == self.rank else a) not in self._channels
        ]
        if not mine:
            return
        with (
            self._guard(),
            ThreadPoolExecutor(
                max_workers=max(1, min(concurrency, len(mine))),
                thread_name_prefix=f"fmi-connect-{self.rank}",
            ) as pool,
        ):
            futures = [pool.submit(self._channel, peer) for peer in mine]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]

    def _guard(self) -> _Guard:
        return _Guard(self)

    def _abort(self, exc: BaseException) -> None:
        """After a failure, close every connection so that ranks waiting on us fail too."""
        if self._broken is None:
            self._broken = exc
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()  # later calls say why the communicator is unusable
        for channel in channels:
            channel.close()

    # -- point to point ------------------------------------------------------------------

    def _check_peer(self, peer: int, what: str) -> None:
        if not isinstance(peer, int) or not 0 <= peer < self.size:
            raise ValueError(f"{what} must be a rank in 0..{self.size - 1}, got {peer!r}")

    def send(self, obj: Any, dest: int, tag: int = 0) -> None:
        """Send ``obj`` to rank ``dest``; numpy arrays go as raw buffers, the rest pickled."""
        channel = self._channels.get(dest)
        if channel is not None and tag >= 0:  # fast path: known peer
            channel.send(obj, tag)
            return
        self._check_peer(dest, "dest")
        if tag < 0:
            raise ValueError(f"tag must be >= 0, got {tag}")
        if dest == self.rank:
            self._self_queue[tag].append(obj)
            return
        self._channel(dest).send(obj, tag)

    def recv(self, source: int, tag: int = 0, *, out: Any = None) -> Any:
        """The next object rank ``source`` sent with ``tag`` (others are kept for later).

        An array lands in ``out`` (no allocation) when ``out`` has its dtype and size.
        """
        channel = self._channels.get(source)
        if channel is not None and tag >= 0:  # fast path: known peer
            return channel.recv(tag, out)
        self._check_peer(source, "source")
        if tag < 0:
            raise ValueError(f"tag must be >= 0, got {tag}")
        if source == self.rank:
            if not self._self_queue[tag]:
                raise FmiClientError(f"rank {self.rank}: recv from itself with nothing sent")
            return self._self_queue[tag].popleft()
        return self._channel(source).recv(tag, out)

    def _send(self, obj: Any, dest: int) -> None:
        self._channel(dest).send(obj, _COLL)

    def _recv(self, source: int, out: Any = None) -> Any:
        return self._channel(source).recv(_COLL, out)

    def _exchange(self, obj: Any, peer: int, out: Any = None) -> Any:
        return self._channel(peer).exchange(obj, _COLL, out)

    def _send_items(self, items: list[Any], dest: int) -> None:
        self._send(len(items), dest)
        for item in items:
            self._send(item, dest)

    def _recv_items(self, source: int) -> list[Any]:
        count = self._recv(source)
        return [self._recv(source) for _ in range(count)]

    # -- collectives ---------------------------------------------------------------------

    def _check_root(self, root: int) -> None:
        self._check_peer(root, "root")

    def barrier(self) -> None:
        """Return once every rank has called barrier()."""
        with self._guard():
            self._allreduce_doubling(None, lambda a, b: None)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Root's ``obj`` on every rank (binomial tree)."""
        self._check_root(root)
        with self._guard():
            return self._bcast(obj, root, many=False)

    def _bcast(self, obj: Any, root: int, *, many: bool) -> Any:
        n, rel = self.size, (self.rank - root) % self.size
        mask = 1
        while mask < n:
            if rel & mask:
                parent = (rel - mask + root) % n
                obj = self._recv_items(parent) if many else self._recv(parent)
                break
            mask <<= 1
        mask >>= 1
        while mask > 0:
            if rel + mask < n:
                child = (rel + mask + root) % n
                if many:
                    self._send_items(obj, child)
                else:
                    self._send(obj, child)
            mask >>= 1
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        """On root, the list of every rank's ``obj`` in rank order; None elsewhere."""
        self._check_root(root)
        with self._guard():
            items = self._gather(obj, root)
            if self.rank != root:
                return None
            n = self.size
            return [items[(r - root) % n] for r in range(n)]

    def _gather(self, obj: Any, root: int) -> list[Any]:
        """Binomial tree; returns the objects of our subtree in relative-rank order."""
        n, rel = self.size, (self.rank - root) % self.size
        items = [obj]
        mask = 1
        while mask < n:
            if rel & mask:
                self._send_items(items, (rel - mask + root) % n)
                break
            if rel + mask < n:
                items.extend(self._recv_items((rel + mask + root) % n))
            mask <<= 1
        return items

    def allgather(self, obj: Any) -> list[Any]:
        """The list of every rank's ``obj``, in rank order, on every rank."""
        with self._guard():
            items = self._gather(obj, 0)
            return self._bcast(items if self.rank == 0 else None, 0, many=True)

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        """Item ``i`` of root's ``objs`` (one per rank) on rank ``i``."""
        self._check_root(root)
        n = self.size
        if self.rank == root and (objs is None or len(objs) != n):
            got = "None" if objs is None else f"{len(objs)} items"
            raise ValueError(f"scatter needs one item per rank ({n}) on the root, got {got}")
        with self._guard():
            rel = (self.rank - root) % n
            if rel == 0:
                block = [objs[(i + root) % n] for i in range(n)]
                span = 1
                while span < n:
                    span <<= 1
            else:
                span = rel & -rel
                parent = (rel - span + root) % n
                block = self._recv_items(parent)
            mask = span >> 1
            while mask > 0:
                if rel + mask < n:
                    self._send_items(block[mask : 2 * mask], (rel + mask + root) % n)
                mask >>= 1
            return block[0]

    def reduce(
        self, obj: Any, op: ops.Op = "sum", root: int = 0, *, commutative: bool = True
    ) -> Any:
        """On root, every rank's ``obj`` folded with ``op`` (in rank order); None elsewhere."""
        self._check_root(root)
        op = ops.check(op)
        with self._guard():
            if commutative or root == 0:
                result = self._reduce(obj, op, root)
            else:  # fold at rank 0 (where relative order is rank order), then hand over
                result = self._reduce(obj, op, 0)
                if self.rank == 0:
                    self._send(result, root)
                elif self.rank == root:
                    result = self._recv(0)
            return result if self.rank == root else None

    def _reduce(self, obj: Any, op: ops.Op, root: int) -> Any:
        n, rel = self.size, (self.rank - root) % self.size
        acc = obj
        owned = False  # whether acc is an array we may overwrite
        mask = 1
        while mask < n:
            if rel & mask:
                self._send(acc, (rel - mask + root) % n)
                return None
            if rel + mask < n:
                other = self._recv((rel + mask + root) % n)
                acc, owned = self._fold(op, acc, other, owned)
            mask <<= 1
        return acc

    @staticmethod
    def _fold(op: ops.Op, left: Any, right: Any, left_owned: bool) -> tuple[Any, bool]:
        """``left op right``; reuses left's buffer when we own it and types agree."""
        if (
            left_owned
            and ops.is_named(op)
            and is_array(left)
            and is_array(right)
            and left.shape == right.shape
            and left.dtype == right.dtype
        ):
            return ops.combine(op, left, right, out=left), True
        result = ops.combine(op, left, right)
        return result, is_array(result) and result is not left and result is not right

    def allreduce(
        self, obj: Any, op: ops.Op = "sum", *, commutative: bool = True, out: Any = None
    ) -> Any:
        """Every rank's ``obj`` folded with ``op`` in rank order, on every rank.

        For an array, ``out`` (same dtype and size, C-contiguous, writeable, not sharing
        memory with ``obj``) receives the result and is returned, like mpi4py's
        ``Allreduce(sendbuf, recvbuf)``: large arrays then need no fresh result array
        (whose first touch of every page costs more than the sum). Any other ``out`` is
        ignored and a new object is returned.
        """
        op = ops.check(op)
        into = _usable_out(out, obj)
        with self._guard():
            pof2 = 1 << (self.size.bit_length() - 1)
            if (
                ops.is_named(op)
                and is_array(obj)
                and obj.nbytes >= LARGE_ALLREDUCE
                and obj.size >= pof2
                and self.size > 1
            ):
                return self._allreduce_large(obj, op, into)
            result = self._allreduce_doubling(obj, op)
        if into is not None and is_array(result) and result.size == into.size:
            into.reshape(-1)[...] = result.reshape(-1)
            return into
        return result

    def _allreduce_doubling(self, obj: Any, op: ops.Op) -> Any:
        """Recursive doubling; extra ranks (non-power-of-two) fold into a neighbour first."""
        n, rank = self.size, self.rank
        if n == 1:
            return obj.copy() if is_array(obj) else obj
        pof2 = 1 << (n.bit_length() - 1)
        rem = n - pof2
        acc, owned = obj, False
        if rank < 2 * rem:
            if rank % 2 == 0:
                self._send(acc, rank + 1)
                return self._recv(rank + 1)
            acc, owned = self._fold(op, self._recv(rank - 1), acc, True)
            newrank = rank // 2
        else:
            newrank = rank - rem
        mask = 1
        while mask < pof2:
            newdst = newrank ^ mask
            dst = newdst * 2 + 1 if newdst < rem else newdst + rem
            other = self._exchange(acc, dst)
            if newdst < newrank:
                acc, owned = self._fold(op, other, acc, True)
            else:
                acc, owned = self._fold(op, acc, other, owned)
            mask <<= 1
        if rank < 2 * rem:
            self._send(acc, rank - 1)
        if is_array(acc) and not owned:
            acc = acc.copy()
        return acc

    def _allreduce_large(self, array: Any, op: ops.Op, out: Any = None) -> Any:
        """Reduce-scatter (recursive halving) + allgather (recursive doubling).

        Every exchange is full duplex (Channel.exchange). The input is never copied: the
        first step sends from it and folds it with what arrives straight into the result,
        whose other half the allgather fills later.
        """
        n, rank = self.size, self.rank
        src = np.ascontiguousarray(array).reshape(-1)  # a view unless array is strided
        if out is not None:  # checked by _usable_out
            acc = out.reshape(-1)
            shaped = out
        else:
            acc = np.empty(src.size, dtype=src.dtype)
            shaped = acc.reshape(array.shape)
        pof2 = 1 << (n.bit_length() - 1)
        rem = n - pof2
        if rank < 2 * rem and rank % 2 == 0:
            self._send(src, rank + 1)
            self._recv(rank + 1, out=acc)
            return shaped
        if rank < 2 * rem:
            other = self._recv(rank - 1, out=acc)
            ops.combine(op, other, src, out=acc)
            src = acc
            newrank = rank // 2
        else:
            newrank = rank - rem
        edges = [i * acc.size // pof2 for i in range(pof2 + 1)]
        scratch = self._scratch(edges[pof2 // 2] + acc.size % 2 + 1, acc.dtype)
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
            theirs = scratch[: mine.size]
            theirs = self._exchange(src[edges[give[0]] : edges[give[1]]], dst, out=theirs)
            if newdst < newrank:
                ops.combine(op, theirs, mine, out=into)
            else:
                ops.combine(op, mine, theirs, out=into)
            src = acc  # from the second step on, everything we hold is in acc
            steps.append((dst, keep, give))
            lo, hi = keep
            mask <<= 1
        for dst, keep, give in reversed(steps):
            into = acc[edges[give[0]] : edges[give[1]]]
            got = self._exchange(acc[edges[keep[0]] : edges[keep[1]]], dst, out=into)
            if got is not into and got.size:
                into[...] = got
        if rank < 2 * rem:
            self._send(acc, rank - 1)
        return shaped

    def _scratch(self, size: int, dtype: Any) -> Any:
        """A reusable receive buffer (fresh 32 MiB buffers cost page faults every call)."""
        nbytes = size * np.dtype(dtype).itemsize
        if self._scratch_buf is None or self._scratch_buf.nbytes < nbytes:
            self._scratch_buf = np.empty(nbytes, dtype=np.uint8)
        return self._scratch_buf[:nbytes].view(dtype)

    def scan(self, obj: Any, op: ops.Op = "sum", *, commutative: bool = True) -> Any:
        """Inclusive prefix: ranks 0..rank's objects folded with ``op`` in rank order."""
        op = ops.check(op)
        with self._guard():
            n, rank = self.size, self.rank
            result, partial = obj, obj
            mask = 1
            while mask < n:
                dst = rank ^ mask
                if dst < n:
                    other = self._exchange(partial, dst)
                    if dst < rank:
                        partial = ops.combine(op, other, partial)
                        result = ops.combine(op, other, result)
                    else:
                        partial = ops.combine(op, partial, other)
                mask <<= 1
            if is_array(result) and result is obj:
                result = result.copy()
            return result

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Communicator(rank={self.rank}, world_size={self.size}, "
            f"rendezvous='{self.host}:{self.port}', comm_name={self.comm_name!r})"
        )


def _usable_out(out: Any, obj: Any) -> Any:
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


class _Guard:
    """Turns any failure inside a collective into a closed communicator (see _abort).

    Not only network errors: a user op that raises, a frame that does not decode, an
    interrupt. A rank that leaves a collective half done would leave its peers waiting
    for a message that never comes; closing its connections makes them raise PeerLost.
    (Argument errors are raised before a collective starts and break nothing.)
    """

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.comm._abort(exc)


__all__ = ["LARGE_ALLREDUCE", "Communicator", "PeerLost", "round_robin"]

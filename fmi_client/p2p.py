"""Point-to-point the mpi4py way: any source, any tag, Status, sendrecv, isend/irecv with
Requests, and Split into sub-communicators (mixed into the Communicator).

Any source on a lazily paired mesh: every other rank may send, so a receive from
ANY_SOURCE starts pairing (one thread each) with every rank not yet paired, and polls the
connected ranks meanwhile; the first matching message wins. Pairings still under way go
on after it returns (each ends once paired or after ``timeout``), so a later message
from such a rank finds the connection made; the Communicator never starts a second
pairing under the same name (the server would pair the two with each other).

Progress of the non-blocking calls: ``isend`` of a frame up to SMALL_ISEND bytes is sent
at once (the kernel takes it); a larger one is written by a thread of its own that ends
when the kernel has all of it (later sends to that rank wait for it, keeping order).
``irecv`` reserves nothing: the message waits in the kernel and in the per-tag queues
until ``wait()``/``test()`` takes it. No thread ever polls.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fmi_client import framing
from fmi_client.errors import FmiClientError, PeerLost, PeerNeverArrived

if TYPE_CHECKING:
    from fmi_client.channel import Channel
    from fmi_client.communicator import Communicator

#: Receive from any rank / with any tag (Open MPI's values, as mpi4py has them).
ANY_SOURCE = -1
ANY_TAG = -1
#: The color of ranks that want no sub-communicator from Split (Open MPI's value).
UNDEFINED = -32766
#: isend sends frames up to this many payload bytes at once, larger ones from a thread.
SMALL_ISEND = 64 * 1024
#: How often an any-source receive looks for pairings finished meanwhile (seconds).
_PAIRING_POLL = 0.02


class Status:
    """Where a received message came from (mpi4py's ``Status``): ``source``, ``tag``
    and ``count`` (bytes of an array or bytes payload; None for pickled objects)."""

    __slots__ = ("count", "source", "tag")

    def __init__(self) -> None:
        self.source = ANY_SOURCE
        self.tag = ANY_TAG
        self.count: int | None = None

    def Get_source(self) -> int:
        return self.source

    def Get_tag(self) -> int:
        return self.tag

    def Get_count(self) -> int | None:
        return self.count

    def _fill(self, source: int, tag: int, obj: Any) -> None:
        self.source, self.tag = source, tag
        nbytes = getattr(obj, "nbytes", None)
        self.count = len(obj) if isinstance(obj, bytes) else nbytes


class Request:
    """A pending isend or irecv: ``wait()`` returns its object (None for a send), ``test()``
    returns ``(done, object)`` without waiting for a message that has not begun."""

    def __init__(self, comm: Communicator, source: int = ANY_SOURCE, tag: int = ANY_TAG) -> None:
        self._comm = comm
        self._source, self._tag = source, tag
        self._out: Any = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._result: Any = None
        self._is_recv = False
        self._status: Status | None = None

    def _finished(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()

    def wait(self, status: Status | None = None) -> Any:
        if self._is_recv:
            if not self._done.is_set():
                self._status = Status()
                self._result = self._comm.recv(self._source, self._tag, self._status, self._out)
                self._done.set()
            if status is not None and self._status is not None:
                status.source, status.tag = self._status.source, self._status.tag
                status.count = self._status.count
        else:
            self._done.wait()
            if self._error is not None:
                raise self._error
        return self._result

    def test(self, status: Status | None = None) -> tuple[bool, Any]:
        if self._done.is_set() or not self._is_recv:
            done = self._done.is_set()
            return done, (self.wait(status) if done else None)
        if not poll_ready(self._comm, self._source, self._tag):
            return False, None
        return True, self.wait(status)

    def Wait(self, status: Status | None = None) -> Any:
        return self.wait(status)

    def Test(self, status: Status | None = None) -> bool:
        return self.test(status)[0]

    @staticmethod
    def waitall(requests: Sequence[Request], statuses: list[Status] | None = None) -> list[Any]:
        """Every request's object, in order. Receives are taken first: our large sends
        move in their own threads meanwhile, and a peer doing the same waitall finishes
        its sends only once we read them."""
        results: list[Any] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: not requests[i]._is_recv)
        for i in order:
            status = statuses[i] if statuses is not None and i < len(statuses) else None
            results[i] = requests[i].wait(status)
        return results

    Waitall = waitall


def check_tag(tag: int, *, receiving: bool) -> None:
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise TypeError(f"tag must be an int, got {tag!r}")
    if tag < 0 and not (receiving and tag == ANY_TAG):
        allowed = ">= 0 or ANY_TAG" if receiving else ">= 0"
        raise ValueError(f"tag must be {allowed}, got {tag}")


def check_rank(comm: Communicator, rank: int, what: str, *, any_source: bool = False) -> None:
    if any_source and rank == ANY_SOURCE:
        return
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < comm.size:
        extra = " or ANY_SOURCE" if any_source else ""
        raise ValueError(f"{what} must be a rank in 0..{comm.size - 1}{extra}, got {rank!r}")


def recv(comm: Communicator, source: int, tag: int, status: Status | None, out: Any) -> Any:
    """Communicator.recv off its fast path: checked arguments, self, any tag, any source."""
    check_rank(comm, source, "source", any_source=True)
    check_tag(tag, receiving=True)
    if source == ANY_SOURCE:
        return _recv_any_source(comm, tag, status, out)
    if source == comm.rank:
        got = _take_own(comm, tag)
        if got is None:
            raise FmiClientError(f"rank {comm.rank}: recv from itself with nothing sent")
        got_tag, obj = got
    else:
        got_tag, obj = comm._channel(source).recv_tagged(tag, out)
    if status is not None:
        status._fill(source, got_tag, obj)
    return obj


def _take_own(comm: Communicator, tag: int) -> tuple[int, Any] | None:
    """The oldest message this rank sent itself with ``tag`` (negative: any tag)."""
    queues = comm._self_queue
    if tag < 0:
        order = comm._self_order
        if not order:
            return None
        tag = order[0]
    elif not queues.get(tag):
        return None
    comm._self_order.remove(tag)
    return tag, queues[tag].popleft()


def _recv_any_source(comm: Communicator, tag: int, status: Status | None, out: Any) -> Any:
    limit = comm.op_timeout
    deadline = None if limit is None else time.monotonic() + limit
    peers = [peer for peer in range(comm.size) if peer != comm.rank]
    while True:
        own = _take_own(comm, tag)
        if own is not None:
            if status is not None:
                status._fill(comm.rank, *own)
            return own[1]
        ready = _find(comm, tag)
        if ready is not None:
            peer, got_tag, obj = ready
            if status is not None:
                status._fill(peer, got_tag, obj)
            return obj
        for peer in peers:
            error = comm._pair_errors.pop(peer, None)
            if error is not None and not isinstance(error, PeerNeverArrived):
                raise error  # e.g. the server refused: retrying would not help
            if peer not in comm._channels:
                start_pairing(comm, peer)
        # a copy first (one C call): pairing threads add to the dict meanwhile
        channels = {peer: ch for peer, ch in list(comm._channels.items()) if not ch.eof}
        poller = select.poll()
        for channel in channels.values():
            poller.register(channel.fileno(), select.POLLIN)
        pairing = len(comm._channels) < len(peers)
        if not channels and not pairing:
            raise PeerLost(
                f"rank {comm.rank}: every other rank closed its connection; nothing can "
                f"arrive (recv from ANY_SOURCE, tag {tag})"
            )
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if pairing:
            wait = _PAIRING_POLL if wait is None else min(wait, _PAIRING_POLL)
        if any(channel.readable_now() for channel in channels.values()):
            wait = 0  # bytes poll() cannot see (decrypted inside TLS, or buffered)
        if not poller.poll(None if wait is None else int(wait * 1000) + 1):
            if deadline is not None and time.monotonic() >= deadline:
                raise PeerLost(
                    f"rank {comm.rank}: nothing arrived from any rank within "
                    f"op_timeout={limit:g} s (recv from ANY_SOURCE, tag {tag})"
                )
            continue
        for channel in channels.values():
            channel.pump()


def _find(comm: Communicator, tag: int) -> tuple[int, int, Any] | None:
    """A queued message with ``tag`` from the lowest connected rank that has one."""
    for peer, channel in sorted(comm._channels.items()):
        found = channel.take_queued(tag)
        if found is not None:
            return peer, found[0], found[1]
    return None


def poll_ready(comm: Communicator, source: int, tag: int) -> bool:
    """Whether a message for (source, tag) is here, reading what has arrived (no wait)."""
    if source == comm.rank or source == ANY_SOURCE:
        queue = comm._self_queue
        if (tag < 0 and comm._self_order) or (tag >= 0 and queue.get(tag)):
            return True
    peers = range(comm.size) if source == ANY_SOURCE else [source]
    for peer in peers:
        if peer == comm.rank:
            continue
        channel = comm._channels.get(peer)
        if channel is None:
            start_pairing(comm, peer)
            continue
        channel.pump()
        if tag < 0 and any(t >= 0 for t in channel._order):
            return True
        if tag >= 0 and tag in channel._queued:
            return True
    return False


def start_pairing(comm: Communicator, peer: int) -> None:
    """Pair with ``peer`` in a thread (ends once paired or failed) unless already under way."""
    with comm._lock:
        if peer in comm._channels or peer in comm._pairing or comm._closed:
            return
        event = comm._pairing[peer] = threading.Event()
    name = f"fmi-pair-{comm.rank}-{peer}"
    threading.Thread(target=_pair_quietly, args=(comm, peer, event), name=name, daemon=True).start()


def _pair_quietly(comm: Communicator, peer: int, event: threading.Event) -> None:
    with contextlib.suppress(BaseException):  # kept in comm._pair_errors for the receive
        comm._pair_registered(peer, event)


def isend(comm: Communicator, obj: Any, dest: int, tag: int) -> Request:
    """Never waits for a pairing or a peer: an unpaired ``dest`` gets an outbox drained by
    one thread (in order) once paired; a large frame to a paired one goes from a thread."""
    check_rank(comm, dest, "dest")
    check_tag(tag, receiving=False)
    request = Request(comm)
    with comm._lock:
        outbox = comm._outbox.get(dest)
        if outbox is not None:
            outbox[1].append((obj, tag, request))
            return request
        if dest != comm.rank and dest not in comm._channels:
            queue: deque[Any] = deque([(obj, tag, request)])
            thread = threading.Thread(
                target=_drain, args=(comm, dest, queue), name=f"fmi-isend-{dest}", daemon=True
            )
            comm._outbox[dest] = (thread, queue)
            thread.start()
            return request
    nbytes = obj.nbytes if hasattr(obj, "nbytes") else len(obj) if isinstance(obj, bytes) else 0
    if dest == comm.rank or nbytes <= SMALL_ISEND:
        try:
            comm.send(obj, dest, tag)
        except BaseException as exc:
            request._finished(exc)
            raise
        request._finished(None)
    else:
        send_later(comm._channel(dest), obj, tag, request)
    return request


def send_later(channel: Channel, obj: Any, tag: int, request: Request) -> None:
    """Send ``obj`` from a thread of its own (it ends when the kernel has it all, or on an
    error); later sends on the channel wait for it first, keeping frames in order."""
    channel.finish_sending()

    def run() -> None:
        error: BaseException | None = None
        try:
            channel._write(*framing.encode(obj, tag))
        except BaseException as exc:  # handed to the request, raised by its wait()
            error = exc
        request._finished(error)

    name = f"fmi-isend-{channel.me}-{channel.peer}"
    channel._sender = thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()


def _drain(comm: Communicator, dest: int, queue: deque[Any]) -> None:
    """Pair with ``dest``, then send its outbox in order; every request learns its fate."""
    error: BaseException | None = None
    channel = None
    try:
        channel = comm._channel(dest)
    except BaseException as exc:  # each queued request raises it from wait()
        error = exc
    while True:
        with comm._lock:
            if not queue:
                comm._outbox.pop(dest, None)
                return
            obj, tag, request = queue.popleft()
        if channel is None:
            request._finished(error)
            continue
        try:
            channel._write(*framing.encode(obj, tag))
        except BaseException as exc:
            error, channel = exc, None
            request._finished(exc)
        else:
            request._finished(None)


def irecv(comm: Communicator, source: int, tag: int, out: Any = None) -> Request:
    check_rank(comm, source, "source", any_source=True)
    check_tag(tag, receiving=True)
    request = Request(comm, source, tag)
    request._is_recv = True
    request._out = out
    return request


def split_groups(keys: list[tuple[int, int]], rank: int) -> tuple[int, list[int]]:
    """This rank's new rank and its group's parent ranks, from every rank's (color, key):
    the ranks of its color ordered by key, ties by parent rank (MPI_Comm_split's rule)."""
    color = keys[rank][0]
    members = sorted((key, r) for r, (c, key) in enumerate(keys) if c == color)
    group = [r for _, r in members]
    return group.index(rank), group


def check_color(color: Any, key: Any) -> None:
    for value, what in ((color, "color"), (key, "key")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Split: {what} must be an int, got {value!r}")
    if color < 0 and color != UNDEFINED:
        raise ValueError(f"Split: color must be >= 0 or UNDEFINED, got {color}")

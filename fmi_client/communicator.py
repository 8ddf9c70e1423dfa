"""Communicator: mpi4py-style point-to-point and collectives between ranks over punched TCP.

Each pair of ranks shares one connection, made the first time they talk (pair() under a
name unique to the communicator and the pair) and reused both ways; the pairing itself is
``fmi_client.links.LazyPairing``, mixed in. This module owns the connections' state,
point-to-point with tags, and failure handling (an error inside a collective
closes this rank's connections so that its peers raise instead of waiting forever). The
collective algorithms are functions over a Transport (``fmi_client.collectives``,
``fmi_client.allreduce`` and ``fmi_client.exchanges``); the Communicator hands them its
connections as one (``fmi_client.links``). The rest of mpi4py's surface is mixed in:
``fmi_client.surface`` (lowercase object calls, Split) and ``fmi_client.buffers``
(uppercase buffer calls); any source, requests and outboxes live in ``fmi_client.p2p``.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from typing import Any

from fmi_client import collectives, p2p
from fmi_client.address import check_int, check_port, parse_rendezvous
from fmi_client.allreduce import LARGE_ALLREDUCE, Scratch, allreduce
from fmi_client.buffers import BufferCalls
from fmi_client.channel import SMALL_FRAME, Channel
from fmi_client.errors import NameTooLong, PeerLost
from fmi_client.framing import FIXED_SIZE, FIXED_STRUCT, KIND_BYTES, MAGIC
from fmi_client.handshake import LinkSecret
from fmi_client.link import LinkInfo
from fmi_client.links import CollectiveLinks, Guard, LazyPairing, round_robin
from fmi_client.linksecurity import LinkSecurity
from fmi_client.natpath import DEFAULT_DISCOVERY_PORT, NAT_CHOICES
from fmi_client.ops import OpLike, as_op
from fmi_client.p2p import ANY_SOURCE, ANY_TAG, Status
from fmi_client.punch import PUNCH_WINDOW, RELAY_MODES
from fmi_client.safecodec import DEFAULT_MAX_MESSAGE_BYTES
from fmi_client.surface import ObjectCalls
from tcpunch import V1_MAX_NAME, V2_NAME_FIELD

_pack_bytes = FIXED_STRUCT.pack
_unpack = FIXED_STRUCT.unpack_from


class Communicator(LazyPairing, ObjectCalls, BufferCalls):
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

    ``secret`` (default ``$FMI_SECRET``), the job secret every rank shares: each link
    then proves it before one user byte moves, and is encrypted (TLS 1.3) unless
    ``encrypt=False``; a stranger on a pairing name is dropped and the pairing retried.
    Without one, only plain data (numbers, str, bytes, lists, tuples, dicts, numpy
    arrays) is decoded from peers: other objects need a secret or ``allow_pickle=True``.
    ``max_message_bytes`` bounds every message (``fmi_client.linksecurity``).

    ``relay`` ("auto", "never" or "always") is every pairing's path (see pair_raw):
    "auto" punches and goes through the server's relay when the punch cannot work or
    fails, "never" only punches, "always" relays. ``links()`` tells which path each
    link took (one log line per link says it too); Split passes the setting on.
    ``nat`` ("auto", or declared: "no-inbound" for a host that accepts no inbound
    connection, "port-dependent", "endpoint-independent") and ``discovery_port`` (the
    server's NAT discovery port, None: no probe) are pair_raw's: each side's NAT class
    travels through the rendezvous, so a pair that cannot punch relays at once.
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
        credential: str | None = None,
        secret: str | bytes | LinkSecret | None = None,
        encrypt: bool = True,
        allow_pickle: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        relay: str = "auto",
        nat: str = "auto",
        discovery_port: int | None = DEFAULT_DISCOVERY_PORT,
    ) -> None:
        if not isinstance(relay, str) or relay not in RELAY_MODES:
            raise ValueError(
                f"relay must be one of {', '.join(map(repr, RELAY_MODES))} (auto: punch, and "
                "relay through the server when that fails; never: punch only; always: relay "
                f"only), not {relay!r}"
            )
        if not isinstance(nat, str) or nat not in NAT_CHOICES:
            raise ValueError(
                f"nat must be one of {', '.join(map(repr, NAT_CHOICES))} (auto: found out by "
                "NAT discovery; no-inbound: this host accepts no inbound connection), "
                f"not {nat!r}"
            )
        if discovery_port:
            discovery_port = check_port(discovery_port, "discovery_port")
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
        self.relay = relay
        self.nat = nat
        self.discovery_port = discovery_port or None
        self._credential = credential  # for pair(); None: $RENDEZVOUS_CREDENTIAL, if set
        self._security = LinkSecurity(
            secret, encrypt=encrypt, allow_pickle=allow_pickle, max_message_bytes=max_message_bytes
        )
        limit = V2_NAME_FIELD - 1 if protocol == "v2" else V1_MAX_NAME
        longest = self.pairing_name(max(world_size - 2, 0), world_size - 1)
        if len(longest.encode("utf-8")) > limit:
            raise NameTooLong(
                f"pairing names such as {longest!r} take {len(longest.encode())} bytes, over the "
                f"{limit}-byte limit of protocol {protocol}; use a shorter comm_name"
            )
        self._channels: dict[int, Channel] = {}
        self._cancel = threading.Event()  # set by close(): pairings under way stop waiting
        self._link_infos: dict[int, LinkInfo] = {}  # peer -> how its link was made
        self._lock = threading.Lock()
        self._self_queue: dict[int, deque[Any]] = defaultdict(deque)
        self._self_order: deque[int] = deque()  # their tags in the order sent
        self._pairing: dict[int, threading.Event] = {}  # set when that pairing ends
        self._outbox: dict[int, tuple[threading.Thread, deque[Any]]] = {}  # isends, unpaired
        self._pair_errors: dict[int, BaseException] = {}
        self._splits = 0  # Split calls so far: part of the sub-communicators' names
        self._broken: BaseException | None = None
        self._closed = False
        self._scratch = Scratch()  # the large allreduce's receive buffer, kept between calls
        self._links = CollectiveLinks(self)

    # -- connections ---------------------------------------------------------------------

    def pairing_name(self, a: int, b: int) -> str:
        """The rendezvous name of ranks a and b: comm_name, '#', lower rank, '-', higher.

        Everything after the last '#' is two numbers, so distinct (comm_name, pair)
        never share a name (FMI's ``comm_name + "1_11"`` could).
        """
        lo, hi = min(a, b), max(a, b)
        return f"{self.comm_name}#{lo}-{hi}"

    def _guard(self) -> Guard:
        return Guard(self)

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
        """Send ``obj`` to rank ``dest``; bytes and numpy arrays go raw, other plain data
        safe-encoded, the rest pickled (where pickle is allowed)."""
        channel = self._channels.get(dest)
        if channel is not None and tag >= 0:  # fast path: known peer
            if type(obj) is bytes and len(obj) <= SMALL_FRAME and channel._sender is None:
                try:  # Channel.send's first case, inlined: one Python call less per message
                    channel._sendall(_pack_bytes(MAGIC, KIND_BYTES, tag, len(obj), 0, 0) + obj)
                except OSError as exc:
                    raise channel._lost(f"sending to it failed ({exc})") from exc
                return
            channel.send(obj, tag)
            return
        p2p.check_rank(self, dest, "dest")
        p2p.check_tag(tag, receiving=False)
        if dest == self.rank:
            self._self_queue[tag].append(obj)
            self._self_order.append(tag)
            return
        self._channel(dest).send(obj, tag)

    def recv(
        self,
        source: int = ANY_SOURCE,
        tag: int = ANY_TAG,
        status: Status | None = None,
        out: Any = None,
    ) -> Any:
        """The next object from ``source`` (any rank: ANY_SOURCE) with ``tag`` (any:
        ANY_TAG); others are kept for later. ``status`` (a Status) learns its source, tag
        and size. An array lands in ``out`` when ``out`` has its dtype and size."""
        channel = self._channels.get(source)
        if channel is not None and status is None:  # fast paths: known peer
            if tag == ANY_TAG:
                start, end = channel._start, channel._end
                if start == end and not channel._queued and channel._pending is None:
                    try:  # Channel.recv_any's first case, inlined: one Python call less
                        end = channel._recv_into(channel._view)
                    except OSError as exc:
                        raise channel._lost(f"receiving failed ({exc})") from exc
                    if end >= FIXED_SIZE:
                        magic, kind, got, length, _, _ = _unpack(channel._buf, 0)
                        whole = FIXED_SIZE + length == end  # exactly one small frame came
                        if magic == MAGIC and kind == KIND_BYTES and got >= 0 and whole:
                            channel._start = channel._end = 0
                            return channel._view[FIXED_SIZE:end].tobytes()
                    channel._start, channel._end = 0, end
                    if not end:
                        raise channel._lost("it closed the connection (EOF)")
                return channel.recv_any(out)
            if tag >= 0:
                return channel.recv(tag, out)
        return p2p.recv(self, source, tag, status, out)

    # -- collectives (the algorithms are in fmi_client.collectives and .allreduce) ----------

    def barrier(self) -> None:
        """Return once every rank has called barrier()."""
        with self._guard():
            collectives.barrier(self._links)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """Root's ``obj`` on every rank (binomial tree)."""
        self._check_peer(root, "root")
        with self._guard():
            return collectives.bcast(self._links, obj, root)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        """On root, the list of every rank's ``obj`` in rank order; None elsewhere."""
        self._check_peer(root, "root")
        with self._guard():
            return collectives.gather(self._links, obj, root)

    def allgather(self, obj: Any) -> list[Any]:
        """The list of every rank's ``obj``, in rank order, on every rank."""
        with self._guard():
            return collectives.allgather(self._links, obj)

    def scatter(self, objs: list[Any] | None, root: int = 0) -> Any:
        """Item ``i`` of root's ``objs`` (one per rank) on rank ``i``."""
        self._check_peer(root, "root")
        n = self.size
        if self.rank == root and (objs is None or len(objs) != n):
            got = "None" if objs is None else f"{len(objs)} items"
            raise ValueError(f"scatter needs one item per rank ({n}) on the root, got {got}")
        with self._guard():
            return collectives.scatter(self._links, objs, root)

    def reduce(
        self, obj: Any, op: OpLike = "sum", root: int = 0, *, commutative: bool = True
    ) -> Any:
        """On root, every rank's ``obj`` folded with ``op`` (in rank order); None elsewhere.

        ``op`` is an ``fmi_client.ops.Op`` (``SUM``, ``Op.create(f)``...), a name ("sum",
        "prod", "min", "max"...) or a callable f(a, b). A reduce to a root other than 0
        is folded at rank 0 first unless both ``commutative`` and the op's ``commute``.
        """
        self._check_peer(root, "root")
        folder = as_op(op)
        with self._guard():
            return collectives.reduce(self._links, obj, folder, root, commutative=commutative)

    def allreduce(
        self, obj: Any, op: OpLike = "sum", *, commutative: bool = True, out: Any = None
    ) -> Any:
        """Every rank's ``obj`` folded with ``op`` in rank order, on every rank.

        For an array, ``out`` (same dtype and size, C-contiguous, writeable, not sharing
        memory with ``obj``) receives the result and is returned, like mpi4py's
        ``Allreduce(sendbuf, recvbuf)``: large arrays then need no fresh result array
        (whose first touch of every page costs more than the sum). Any other ``out`` is
        ignored and a new object is returned. ``commutative`` is accepted for symmetry:
        the fold is in rank order either way.
        """
        folder = as_op(op)
        with self._guard():
            return allreduce(self._links, obj, folder, out=out, scratch=self._scratch)

    def scan(self, obj: Any, op: OpLike = "sum", *, commutative: bool = True) -> Any:
        """Inclusive prefix: ranks 0..rank's objects folded with ``op`` in rank order."""
        folder = as_op(op)
        with self._guard():
            return collectives.scan(self._links, obj, folder)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and call off pairings under way (an ANY_SOURCE
        receive's, an isend's to an unpaired rank): their threads end within a tenth of a
        second. Safe to call twice."""
        with self._lock:
            self._closed = True
            self._cancel.set()
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


__all__ = ["LARGE_ALLREDUCE", "Communicator", "PeerLost", "round_robin"]

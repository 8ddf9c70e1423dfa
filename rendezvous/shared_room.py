"""The pairing room shared by server replicas through Redis (``serve --redis URL``).

Same decisions as the in-memory :mod:`rendezvous.room` (arrive -> paired / waiting /
refused, token resume and replacement, per-IP waiting cap, leave, remove_name, clear),
made by atomic Lua scripts (:mod:`rendezvous.shared_room_scripts`) so two replicas never
hand one waiter to two newcomers. The connection stays on the replica the client
reached: when a peer arrives elsewhere, the waiter's replica hears it on its notice
channel and gets a :class:`PeerArrived` event carrying its own ``handle``, so it can
write the reply at once. Waiters of a replica whose heartbeat stopped are never handed
out and are reaped by the others within a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rendezvous import shared_room_scripts as scripts
from rendezvous.redis_presence import REDIS_ERRORS, RedisUnavailable, ReplicaPresence, log
from rendezvous.shared_room_events import (
    Displaced,
    Lost,
    Outcome,
    Paired,
    PeerArrived,
    Protocol,
    Refused,
    Removed,
    RoomEvent,
    SharedWaiter,
    Waiting,
)
from tcpunch import Endpoint

_REPLICA_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

__all__ = [
    "Displaced",
    "Lost",
    "Outcome",
    "Paired",
    "PeerArrived",
    "RedisUnavailable",
    "Refused",
    "Removed",
    "RoomEvent",
    "SharedRoom",
    "SharedWaiter",
    "Waiting",
]


def default_replica_id() -> str:
    """Host name, pid and a random part: unique per process incarnation."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "replica"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SharedRoom:
    """Waiting entries, tokens and per-IP counts in Redis; events via ``on_event``.

    ``on_event`` is called on the event loop, synchronously, for this replica's
    waiters (see :data:`RoomEvent`). Every method raises :class:`RedisUnavailable`
    within about ``op_timeout`` when Redis does not answer, and at once while the
    replica is not :attr:`ready`.
    """

    def __init__(
        self,
        url: str,
        on_event: Callable[[RoomEvent], None],
        *,
        replica_id: str | None = None,
        prefix: str = "rendezvous:",
        max_waiting_per_ip: int = 1000,
        token_grace: float = 60.0,
        max_wait: float = 900.0,
        heartbeat_interval: float = 1.0,
        heartbeat_ttl: float = 3.0,
        op_timeout: float = 0.5,
        max_connections: int = 32,
        token_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.replica = replica_id or default_replica_id()
        if not _REPLICA_ID.fullmatch(self.replica):
            raise ValueError(f"replica id {self.replica!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        self.prefix = prefix
        self.max_waiting_per_ip = max_waiting_per_ip
        self.token_grace = token_grace
        self._token_ttl_ms = int((max_wait + token_grace) * 1000)
        self._on_event = on_event
        self._token_factory = token_factory
        # A bounded pool that queues (within the call's deadline) rather than failing
        # when every connection is busy; no retries: our loops retry, a call fails fast.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=op_timeout,
            socket_timeout=op_timeout,
            socket_connect_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"rendezvous-{self.replica}",  # CLIENT LIST shows who is who
            # a half-open notice connection (Redis host gone without a reset) is noticed
            # within seconds, not the kernel's default two hours
            socket_keepalive=True,
            socket_keepalive_options=_keepalive_options(heartbeat_interval),
        )
        self._pool = pool
        self.client: Redis = Redis(connection_pool=pool)
        self.presence = ReplicaPresence(
            self.client,
            prefix,
            self.replica,
            interval=heartbeat_interval,
            ttl=heartbeat_ttl,
            op_timeout=op_timeout,
            token_grace=token_grace,
            on_notice=self._notice,
            on_lapse=self._lapse,
            on_resubscribed=self._reconcile,
            before_beat=self._retry_departures,
        )
        self._arrive = self.client.register_script(scripts.ARRIVE)
        self._leave = self.client.register_script(scripts.LEAVE)
        self._remove = self.client.register_script(scripts.REMOVE)
        self._ids = itertools.count(1)
        self._local: dict[str, SharedWaiter] = {}  # connection id -> this replica's waiter
        self._early: dict[str, list[bytes]] = {}  # notices that beat arrive()'s reply
        self._departures: list[SharedWaiter] = []  # leaves that failed while Redis was away
        self.orphan_notices = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, ready_timeout: float | None = None) -> None:
        """Start beating and listening; with ``ready_timeout``, wait until ready."""
        self.presence.start()
        if ready_timeout is not None:
            await self.presence.wait_ready(ready_timeout)

    async def stop(self, retire: bool = True) -> None:
        await self.presence.stop(retire)
        for closing in (self.client.aclose(), self._pool.disconnect()):
            with contextlib.suppress(*REDIS_ERRORS):  # closing sockets: bounded all the same
                await asyncio.wait_for(closing, self.presence.op_timeout)

    @property
    def ready(self) -> bool:
        """For ``/readyz``: Redis answers, our heartbeat is live, notices arrive."""
        return self.presence.ready

    @property
    def local_waiters(self) -> int:
        return len(self._local)

    # -- queries ---------------------------------------------------------------------

    async def waiting_count(self) -> int:
        return int(await self.presence.call(self.client.hlen(self.prefix + "waiters"), "HLEN"))

    async def waiting_from(self, ip: str) -> int:
        raw = await self.presence.call(self.client.hget(self.prefix + "perip", ip), "HGET")
        return int(raw or 0)

    # -- arrivals and departures -----------------------------------------------------

    async def arrive(
        self,
        name: bytes,
        handle: Any,
        endpoint: Endpoint,
        protocol: Protocol,
        now: float,
        token: str | None = None,
        nat: int = 0,
    ) -> Outcome:
        """Pair with the waiter under ``name`` on any replica, or wait here. ``nat``: the
        NAT class the request reported (0..3), passed to the peer whichever replica it
        reaches."""
        if not self.ready:
            raise RedisUnavailable(f"replica {self.replica} is not connected to Redis")
        connection = str(next(self._ids))
        self._early[connection] = []
        args: list[bytes | str | int] = [self.prefix, name, self.replica, connection]
        args += [endpoint.ip, endpoint.port, protocol, repr(now), token or ""]
        args += [self.max_waiting_per_ip, self._token_factory()]
        args += [int(self.token_grace * 1000), self._token_ttl_ms, nat]
        try:
            reply = await self.presence.call(self._arrive(args=args), "a pairing")
            early = self._early.pop(connection)
        except RedisUnavailable:
            # The script may have run before the deadline cut us off: make sure no entry
            # of this connection stays behind (removed only if it is still this one).
            gone = SharedWaiter(name, None, endpoint, protocol, now, None, self.replica, connection)
            self._departures.append(gone)
            raise
        finally:
            self._early.pop(connection, None)
        kind = reply[0].decode()
        if kind == "refused":
            return Refused(reply[1].decode(), reply[2].decode("utf-8", "replace"))
        if kind == "paired":
            waiter = _unpack_waiter(name, reply[1])
            return Paired(waiter, token or None)
        new_token = reply[1].decode() or None
        waiter = SharedWaiter(
            name, handle, endpoint, protocol, now, new_token, self.replica, connection, nat
        )
        self._local[connection] = waiter
        replaced = None
        replaced_replica, replaced_conn = reply[2].decode(), reply[3].decode()
        if replaced_replica == self.replica:
            replaced = self._local.pop(replaced_conn, None)
        for notice in early:  # after the caller has seen Waiting
            asyncio.get_running_loop().call_soon(self._notice, notice)
        return Waiting(waiter, replaced)

    async def leave(self, waiter: SharedWaiter, now: float) -> bool:
        """The waiter left without pairing; its token stays valid for the grace.

        False when Redis no longer held it for this connection (already paired, removed,
        replaced). When Redis is away the departure is retried before the next heartbeat.
        """
        if self._local.pop(waiter.connection, None) is None:
            return False
        try:
            return bool(await self._send_leave(waiter))
        except RedisUnavailable:
            self._departures.append(waiter)
            raise

    async def remove_name(self, name: bytes, now: float) -> bool:
        """``remove_pair_<name>``: the replica holding it gets :class:`Removed`."""
        removed = await self.presence.call(
            self._remove(args=[self.prefix, int(self.token_grace * 1000), name]), "remove"
        )
        return bool(removed)

    async def clear(self, now: float) -> int:
        """``delete_pairs``: every replica gets :class:`Removed` for its waiters."""
        removed = await self.presence.call(
            self._remove(args=[self.prefix, int(self.token_grace * 1000), ""]), "clear"
        )
        return int(removed)

    async def _send_leave(self, waiter: SharedWaiter) -> int:
        grace = int(self.token_grace * 1000)
        args: list[bytes | str | int] = [self.prefix, waiter.name, self.replica]
        args += [waiter.connection, grace]
        return int(await self.presence.call(self._leave(args=args), "a departure"))

    async def _retry_departures(self) -> None:
        while self._departures:
            await self._send_leave(self._departures[0])
            self._departures.pop(0)

    # -- notices from Redis ----------------------------------------------------------

    def _notice(self, data: bytes) -> None:
        fields = data.split(b"|")
        connection = fields[1].decode() if len(fields) > 1 else ""
        if connection in self._early:
            self._early[connection].append(data)
            return
        waiter = self._local.pop(connection, None)
        if waiter is None:
            self.orphan_notices += 1  # it left (or was lost) as the notice crossed
            return
        kind = fields[0]
        if kind == b"P" and len(fields) in (5, 6):  # 5: from a replica without NAT hints
            peer = Endpoint(fields[2].decode(), int(fields[3]))
            self._emit(PeerArrived(waiter, peer, _protocol(fields[4]), _nat(fields[5:])))
        elif kind == b"R":
            self._emit(Displaced(waiter))
        elif kind == b"D":
            self._emit(Removed(waiter))
        else:  # pragma: no cover - only our scripts publish here
            self._local[connection] = waiter

    def _emit(self, event: RoomEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a handler's bug must not stop the notices of every waiter
            log.exception("replica %s: on_event failed for %r", self.replica, event)

    def _lapse(self) -> None:
        lost, self._local = list(self._local.values()), {}
        self._departures.clear()  # the reaping took care of them
        for waiter in lost:
            self._emit(Lost(waiter))

    async def _reconcile(self) -> None:
        """After a gap in notices: waiters whose entry is no longer ours are lost."""
        if not self._local:
            return
        waiters = list(self._local.values())
        names = [w.name for w in waiters]
        packed = await self.presence.call(
            self.client.hmget(self.prefix + "waiters", names), "reconcile"
        )
        for waiter, raw in zip(waiters, packed, strict=True):
            mine = f"{self.replica}|{waiter.connection}|".encode()
            if isinstance(raw, bytes) and raw.startswith(mine):
                continue  # still ours
            if self._local.pop(waiter.connection, None) is not None:
                self._emit(Lost(waiter))


def _keepalive_options(interval: float) -> dict[int, int]:
    seconds = max(1, round(interval))
    names = {"TCP_KEEPIDLE": seconds, "TCP_KEEPINTVL": seconds, "TCP_KEEPCNT": 3}
    return {getattr(socket, k): v for k, v in names.items() if hasattr(socket, k)}


def _protocol(raw: bytes) -> Protocol:
    return "v2" if raw == b"v2" else "v1"


def _nat(field: list[bytes]) -> int:
    """The NAT class field of an entry or notice (absent from older replicas': 0)."""
    return int(field[0]) & 3 if field and field[0].isdigit() else 0


def _unpack_waiter(name: bytes, packed: bytes) -> SharedWaiter:
    replica, connection, ip, port, protocol, since, token, *nat = packed.split(b"|")
    return SharedWaiter(
        name,
        None,
        Endpoint(ip.decode(), int(port)),
        _protocol(protocol),
        float(since),
        token.decode() or None,
        replica.decode(),
        connection.decode(),
        _nat(nat),
    )

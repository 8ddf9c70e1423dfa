"""Dispatch with the room in Redis (``serve --redis URL``): replicas that pair as one server.

:class:`SharedDispatcher` is the :class:`~rendezvous.dispatch.Dispatcher` whose arrivals,
departures and commands go to a :class:`~rendezvous.shared_room.SharedRoom`. Those are
Redis round trips, so each arrival runs in a task while its connection is ARRIVING (a
row of ``connection.TRANSITIONS``); the in-memory dispatcher stays synchronous and
untouched. A waiter parked here is answered from the room's events: ``PeerArrived``
(a peer reached any replica), ``Displaced``/``Removed`` (close), ``Lost`` (v2 ERROR,
v1 close). Redis unavailable: the client is refused with ``redis_unavailable`` and
``/readyz`` says 503 until the room is ready again (it recovers by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rendezvous.connection import ARRIVING, WAITING, Connection
from rendezvous.dispatch import Dispatcher
from rendezvous.logs import log_event
from rendezvous.relay_forward import RelayForwarder
from rendezvous.room import Waiter
from rendezvous.settings import Settings
from rendezvous.shared_room import (
    Displaced,
    Lost,
    Paired,
    PeerArrived,
    RedisUnavailable,
    Refused,
    Removed,
    RoomEvent,
    SharedRoom,
    SharedWaiter,
    Waiting,
)
from tcpunch import Command, Status, V2Response, encode_v2_response, pack_endpoint
from tcpunch.nathint import NAT_CLASS_SHIFT, flags_nat, hint_for
from tcpunch.relay import ExtRequest, RelayRequest
from tcpunch.request import Request, name_text

log = logging.getLogger("rendezvous")

_PAIRED = Status.PAIRED
_WAITING = Status.WAITING


class SharedDispatcher(Dispatcher):
    """A :class:`Dispatcher` over a :class:`SharedRoom` (one replica of several)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        assert settings.redis_url is not None
        self.shared = SharedRoom(
            settings.redis_url,
            self._on_event,
            replica_id=settings.replica_id,
            prefix=settings.redis_prefix,
            max_waiting_per_ip=settings.max_waiting_per_ip,
            token_grace=settings.effective_token_grace,
            max_wait=max(settings.peer_timeout, settings.v1_peer_timeout),
        )
        self.replica = self.shared.replica
        # this replica's parked connections and their entries in Redis
        self.entries: dict[Connection, SharedWaiter] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.lost = 0  # waiters Redis lost (heartbeat lapse, Redis restarted empty)
        self.forwarder: RelayForwarder | None = None  # relays across replicas, at open()
        self.metrics.waiting = self.entries.__len__  # per replica: sum() gives them all
        self.metrics.registry.register(_RedisCollector(self))

    # -- the room's life -------------------------------------------------------------

    async def open(self, port: int) -> None:
        settings = self.settings
        if settings.relay_advertise is not None and self.relay is not None:
            from rendezvous.relay_forward import RelayForwarder

            self.forwarder = RelayForwarder(
                self.shared,
                self.relay,
                f"{settings.relay_advertise}:{port}",
                key_ttl=settings.peer_timeout + 5,
                proxy_protocol=settings.proxy_protocol,
            )
        await self.shared.start()  # /readyz says 503 until Redis answers

    async def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close_all()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2 * self.shared.presence.op_timeout)
        await self.shared.stop()  # retires: our waiters' tokens go to their grace now

    @property
    def room_ready(self) -> bool:
        return self.shared.ready

    @property
    def busy(self) -> int:
        return len(self.tasks)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- requests --------------------------------------------------------------------

    def dispatch(self, conn: Connection, request: Request | ExtRequest) -> None:
        if type(request) is Command:
            self._shared_command(conn, request)
        elif type(request) is RelayRequest and self.forwarder is not None:
            conn.defer()  # Redis names the replica where both ends meet
            self._spawn(self.forwarder.route(conn, request))
        else:
            super().dispatch(conn, request)

    def _arrive(self, conn: Connection, name: bytes, token: str | None) -> None:
        if self.name_pattern is not None and not self.name_pattern.fullmatch(name_text(name)):
            self.refuse(conn, "name_pattern", f"name {name_text(name)!r} does not match")
            conn.finish(error=True)
            return
        conn.defer()
        self._spawn(self._arrival(conn, name, token))

    async def _arrival(self, conn: Connection, name: bytes, token: str | None) -> None:
        since = time.time()  # wall clock: the waiter's replica may be another host
        try:
            nat = int(flags_nat(conn.flags))  # its NAT class goes to the peer's replica
            outcome = await self.shared.arrive(
                name, conn, conn.endpoint, conn.protocol, since, token, nat
            )
        except RedisUnavailable as exc:
            if conn.state is ARRIVING:
                self.refuse(conn, "redis_unavailable", str(exc))
                conn.finish(error=True)
            return
        except Exception:  # the server never dies of one request
            log.exception("internal error", extra={"event": "internal_error"})
            self.metrics.reject("internal_error")
            if conn.state is ARRIVING:
                conn.finish(error=True)
            return
        if conn.state is not ARRIVING and type(outcome) is not Paired:
            # it hung up (or the server stopped) meanwhile; a pairing still counts (its
            # waiter was told), the closed newcomer's answer is dropped by finish()
            if type(outcome) is Waiting:
                self.metrics.abandoned += 1
                await self._leave(outcome.waiter)
            return
        if type(outcome) is Paired:
            self._paired_here(conn, outcome, since)
        elif type(outcome) is Waiting:
            if conn.protocol == "v1":
                conn.transport.write(conn.v1_reply)  # v1: your own endpoint, at once
            self._park(conn, outcome)
        else:
            assert isinstance(outcome, Refused)
            self.refuse(conn, outcome.reason, outcome.detail)
            conn.finish(error=True)

    def _paired_here(self, conn: Connection, outcome: Paired, now: float) -> None:
        """The newcomer's side; the waiter's replica answers the waiter (PeerArrived)."""
        waiter = outcome.waiter
        peer = waiter.endpoint
        if conn.protocol == "v1":
            conn.finish(payload=conn.v1_reply + pack_endpoint(*peer))
        else:
            hint = hint_for(conn.flags, waiter.nat << NAT_CLASS_SHIFT)
            response = V2Response(_PAIRED, conn.endpoint, peer, outcome.token or "", hint)
            conn.finish(payload=encode_v2_response(response))
        kind = conn.protocol if conn.protocol == waiter.protocol else "mixed"
        self.pairings += 1
        self.metrics.pairings[kind] += 1
        waited = max(0.0, now - waiter.since)
        self.metrics.observe_wait(waited)
        if log.isEnabledFor(logging.INFO):
            fields: dict[str, object] = {
                "event": "paired",
                "pairing": name_text(waiter.name),
                "protocol": kind,
                "waiter": f"{peer.ip}:{peer.port}",
                "newcomer": f"{conn.endpoint.ip}:{conn.endpoint.port}",
                "wait_seconds": round(waited, 6),
                "waiter_replica": waiter.replica,
            }
            if kind == "mixed":
                fields["waiter_protocol"] = waiter.protocol
                fields["newcomer_protocol"] = conn.protocol
            log_event(log, logging.INFO, "paired", fields)

    def _park(self, conn: Connection, outcome: Waiting) -> None:
        entry = outcome.waiter
        replaced = outcome.replaced
        if replaced is not None:  # the token's older connection, on this replica
            self._close_waiter(replaced, "replaced")
        now = self.time()
        conn.park(Waiter(entry.name, conn, entry.endpoint, conn.protocol, now, entry.token))
        self.entries[conn] = entry
        if conn.protocol == "v2":
            self.deadlines.v2[conn] = now + self.peer_timeout
            conn.send_v2(_WAITING, token=entry.token)
        else:
            self.deadlines.v1[conn] = now + self.v1_peer_timeout

    # -- the room's events (this replica's waiters) ----------------------------------

    def _on_event(self, event: RoomEvent) -> None:
        waiter = event.waiter
        conn = waiter.handle
        if not isinstance(conn, Connection) or self.entries.get(conn) is not waiter:
            self.shared.orphan_notices += 1  # it left as the notice crossed
            return
        if type(event) is PeerArrived:
            del self.entries[conn]
            conn.waiter = None
            if conn.protocol == "v1":
                conn.finish(payload=pack_endpoint(*event.peer))
            else:
                hint = hint_for(conn.flags, event.peer_nat << NAT_CLASS_SHIFT)
                response = V2Response(_PAIRED, conn.endpoint, event.peer, waiter.token or "", hint)
                conn.finish(payload=encode_v2_response(response))
        elif type(event) is Displaced:
            self._close_waiter(waiter, "replaced")
        elif type(event) is Removed:
            self._close_waiter(waiter, "removed", error=True)
        else:
            assert isinstance(event, Lost)
            self.lost += 1
            self._close_waiter(waiter, "lost", error=True)

    def _close_waiter(self, waiter: SharedWaiter, why: str, *, error: bool = False) -> None:
        conn = waiter.handle
        if not isinstance(conn, Connection) or self.entries.pop(conn, None) is None:
            return
        conn.waiter = None
        if conn.state is WAITING:
            conn.finish(error=error)
        log.info(
            why,
            extra={"event": why, "pairing": name_text(waiter.name), "client": str(conn.endpoint)},
        )

    # -- departures ------------------------------------------------------------------

    def abandoned(self, conn: Connection, waiter: Waiter[Connection] | None = None) -> None:
        entry = self.entries.pop(conn, None)
        super().abandoned(conn, waiter)  # counts and logs; the in-memory room: a no-op
        if entry is not None:
            self._spawn(self._leave(entry))

    def expired(self, conn: Connection, *, drained: bool = False) -> None:
        entry = self.entries.pop(conn, None)
        super().expired(conn, drained=drained)
        if entry is not None:
            self._spawn(self._leave(entry))

    async def _leave(self, entry: SharedWaiter) -> None:
        with contextlib.suppress(RedisUnavailable):  # queued; retried before the next beat
            await self.shared.leave(entry, time.time())

    # -- commands --------------------------------------------------------------------

    def _shared_command(self, conn: Connection, command: Command) -> None:
        self.metrics.connections["command"] += 1
        auth = self.auth
        if auth is not None:
            decision = auth.check_command(command.kind, command.name)
            if not self._admitted(conn, decision, command.name or command.kind.encode()):
                return
        if command.kind == "delete_pairs" and not self.settings.allow_delete_pairs:
            self.refuse(
                conn,
                "delete_pairs_disabled",
                "delete_pairs is off; start the server with --allow-delete-pairs",
            )
            conn.finish()
            return
        conn.defer()
        self._spawn(self._run_command(conn, command))

    async def _run_command(self, conn: Connection, command: Command) -> None:
        """The holding replicas close their waiters (``Removed``), this one too."""
        now = time.time()
        try:
            if command.kind == "delete_pairs":
                removed = await self.shared.clear(now)
            else:
                removed = int(await self.shared.remove_name(command.name, now))
        except RedisUnavailable as exc:
            if conn.state is ARRIVING:
                self.refuse(conn, "redis_unavailable", str(exc))
                conn.finish(error=True)
            return
        log.info(
            command.kind,
            extra={
                "event": command.kind,
                "pairing": name_text(command.name),
                "removed": removed,
                "client": str(conn.endpoint),
            },
        )
        if conn.state is ARRIVING:
            conn.finish()


class _RedisCollector:
    """The replica's view of Redis, for /metrics."""

    def __init__(self, dispatcher: SharedDispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        d = self.dispatcher
        presence = d.shared.presence
        yield GaugeMetricFamily(
            "rendezvous_redis_ready",
            "1 when Redis answers, this replica's heartbeat is live and notices arrive",
            1 if d.shared.ready else 0,
        )
        yield CounterMetricFamily(
            "rendezvous_redis_lapses",
            "Times this replica's heartbeat lapsed (its waiters were lost)",
            presence.lapses,
        )
        yield CounterMetricFamily(
            "rendezvous_redis_reaped",
            "Waiters of dead replicas this replica removed from Redis",
            presence.reaped,
        )
        yield CounterMetricFamily(
            "rendezvous_redis_orphan_notices",
            "Notices for waiters that had already left (a departure crossed a pairing)",
            d.shared.orphan_notices,
        )
        yield CounterMetricFamily(
            "rendezvous_redis_lost_waiters",
            "Waiters closed because Redis lost them (v2 got ERROR and may resume)",
            d.lost,
        )
        forwarder = d.forwarder
        yield CounterMetricFamily(
            "rendezvous_relay_forwarded",
            "Relay ends sent on to the replica where their session meets",
            0 if forwarder is None else forwarder.forwarded,
        )
        yield CounterMetricFamily(
            "rendezvous_relay_forward_failed",
            "Relay ends whose owner replica could not be reached (refused: DRAINING)",
            0 if forwarder is None else forwarder.unreachable,
        )
        yield GaugeMetricFamily(
            "rendezvous_redis_pending",
            "Arrivals and commands waiting for Redis's answer now",
            len(d.tasks),
        )

"""The server: the TCP listener, the HTTP runner, the deadline tick, start, stop, drain.

``RendezvousServer`` owns the parts: :mod:`rendezvous.connection` (one
``asyncio.Protocol`` per connection, its states in a table), :mod:`rendezvous.dispatch`
(request -> room outcome -> replies, metrics, logs), :mod:`rendezvous.deadlines` (one
tick sweeps every deadline) and :mod:`rendezvous.http` (reads it through
:class:`rendezvous.status.ServerStatus`). Its sockets come from :mod:`rendezvous.listeners`,
what the loop reports goes to :mod:`rendezvous.loop_errors`. The pairing decisions live in
:mod:`rendezvous.room`; the wire encoding in :mod:`tcpunch`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from rendezvous import __version__
from rendezvous.connection import PROXY_HEADER, READING, WAITING, Connection
from rendezvous.dispatch import Dispatcher
from rendezvous.fdbudget import FdBudget, descriptors_in_use, plan, raise_open_files_limit
from rendezvous.listeners import listening_socket
from rendezvous.loop_errors import after_stop, report_loop_error
from rendezvous.metrics import Metrics
from rendezvous.relay import RelayHub
from rendezvous.relay_limits import relay_limits
from rendezvous.relay_metrics import RelayMetrics
from rendezvous.room import Room
from rendezvous.settings import Settings
from rendezvous.status import Health

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import web

    from rendezvous.discovery import ProxiedDiscovery

__all__ = ["RendezvousServer"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})  # no open-relay warning

log = logging.getLogger("rendezvous")


def _token_purge_interval(settings: Settings) -> float:
    """How often forgotten reconnect tokens are dropped (half a grace, at least 1 s)."""
    return max(1.0, settings.effective_token_grace / 2)


def _dispatcher(settings: Settings) -> Dispatcher:
    """The in-memory dispatcher, or with ``--redis`` the shared one (imports redis)."""
    if settings.redis_url is None:
        return Dispatcher(settings)
    from rendezvous.shared_dispatch import SharedDispatcher

    return SharedDispatcher(settings)


class RendezvousServer:
    """A TCPunch v1+v2 rendezvous server with its HTTP health/metrics endpoint.

    ``async with RendezvousServer(port=0, http_port=0) as server:`` starts it on free
    ports (``server.port``, ``server.http_port``). ``drain()`` is the SIGTERM path.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = Settings(**{**settings.__dict__, **overrides})
        self.settings = settings
        shortest = min(settings.request_timeout, settings.peer_timeout, settings.v1_peer_timeout)
        self.tick = min(0.5, max(0.01, shortest / 10))
        self.draining = False
        self.started_at = time.time()
        self.port = 0
        self.http_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: web.AppRunner | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._next_purge = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None  # the running one, at start()
        self._old_exception_handler: Any = None
        self.dispatcher = _dispatcher(settings)
        metrics = self.dispatcher.metrics  # the gauges only the server can answer
        metrics.open_connections = self.dispatcher.connections.__len__
        metrics.max_connections = settings.max_connections
        metrics.ready = lambda: self.ready
        auth = self.dispatcher.auth
        self.relay = self.dispatcher.relay = RelayHub(
            relay_limits(settings),
            RelayMetrics(max_sessions=settings.relay_max_sessions),
            # with an auth secret, a relay end needs a credential for its name, as v2 does
            credential_check=None
            if auth is None
            else lambda r: auth.check_relay(r.name, r.credential, time.time()).allowed,
            name_pattern=self.dispatcher.name_pattern,
        )
        self.relay.metrics.max_buffered = settings.relay_max_buffered
        metrics.registry.register(self.relay.metrics)
        self.discovery_port: int | None = None
        self._discovery: asyncio.AbstractServer | None = None
        self.proxied_discovery: ProxiedDiscovery | None = None  # --proxy-protocol only
        self.budget: FdBudget | None = None  # the caps in force, from start()

    # -- what the connections share (read by the tests and the HTTP side) ------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the server is not started: await server.start() first")
        return self._loop

    @property
    def room(self) -> Room[Connection]:
        return self.dispatcher.room

    @property
    def metrics(self) -> Metrics:
        return self.dispatcher.metrics

    @property
    def connections(self) -> set[Connection]:
        return self.dispatcher.connections

    @property
    def pairings(self) -> int:
        return self.dispatcher.pairings

    @property
    def reading(self) -> int:
        """Connections whose request is not complete yet (requests in flight)."""
        return len(self.dispatcher.deadlines.reading)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.dispatcher.time = loop.time
        s = self.settings
        budget = self.budget = plan(s, raise_open_files_limit(), descriptors_in_use())
        self.dispatcher.max_connections = budget.tcp
        self.metrics.max_connections = budget.tcp  # the cap in force, for the gauge
        if s.relay:  # the relay's ends fit in the budget too (Connection.hand_off uncounts them)
            self.relay.limits = dataclasses.replace(self.relay.limits, max_sessions=budget.relay)
            self.relay.metrics.max_sessions = budget.relay
        sock = listening_socket(s.host, s.port, s)
        self.port = sock.getsockname()[1]
        self._server = await loop.create_server(
            functools.partial(Connection, self.dispatcher), sock=sock, backlog=s.backlog
        )
        if s.discovery_port is not None:
            from rendezvous.discovery import DiscoveryProtocol, ProxiedDiscovery

            try:
                dsock = listening_socket(s.host, s.discovery_port, s)
            except BaseException:
                self._server.close()
                raise
            self.discovery_port = dsock.getsockname()[1]
            if s.proxy_protocol:  # the balancer's header names the client (discovery.py)
                self.proxied_discovery = ProxiedDiscovery(self.dispatcher, self.relay.metrics)
                factory: Callable[[], asyncio.Protocol] = self.proxied_discovery.protocol
            else:
                factory = functools.partial(DiscoveryProtocol, self.relay.metrics)
            self._discovery = await loop.create_server(factory, sock=dsock)
        if s.http_port is not None:
            from rendezvous.http import start_http

            try:
                self._http, self.http_port = await start_http(
                    self,
                    s.http_host or s.host,
                    s.http_port,
                    cap=budget.http,
                    timeout=s.http_timeout,
                    warnings=self.dispatcher.warnings,
                )
            except BaseException:
                self._server.close()
                if self._discovery is not None:
                    self._discovery.close()
                    self._discovery = None
                raise
        await self.dispatcher.open(self.port)  # the shared room (--redis) starts beating
        self._next_purge = loop.time() + _token_purge_interval(s)
        self._tick_timer = loop.call_later(self.tick, self._on_tick)
        self.relay.start(loop)
        self._old_exception_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        log.info(
            "listening",
            extra={
                "event": "listening",
                "host": s.host,
                "port": self.port,
                "http_port": self.http_port,
                "loop": type(loop).__module__,
                "loop_setting": s.loop,
                "version": __version__,
                # the effective settings, so an operator sees RENDEZVOUS_* took effect
                "peer_timeout": s.peer_timeout,
                "v1_peer_timeout": s.v1_peer_timeout,
                "request_timeout": s.request_timeout,
                "token_grace": s.effective_token_grace,
                # the caps in force: the settings fitted to the open-files limit
                "max_connections": budget.tcp,
                "max_http_connections": budget.http,
                "nofile": budget.nofile,
                "fd_reserve": budget.reserve,
                "fds_at_start": budget.in_use,
                "http_timeout": s.http_timeout,
                "max_tokens": s.max_tokens,
                "max_tokens_per_ip": s.max_tokens_per_ip,
                "max_waiting_per_ip": s.max_waiting_per_ip,
                "name_pattern": s.name_pattern,
                "allow_delete_pairs": s.allow_delete_pairs,
                "drain_timeout": s.drain_timeout,
                "discovery_port": self.discovery_port,
                "relay": s.relay,
                "relay_max_sessions": self.relay.limits.max_sessions,  # the cap in force
                "relay_max_per_ip": s.relay_max_per_ip,
                "relay_max_bytes": s.relay_max_bytes,
                "relay_max_buffered": s.relay_max_buffered,
                "relay_idle_timeout": s.relay_idle_timeout,
                "relay_max_duration": s.relay_max_duration,
                "auth": s.auth,  # whether credentials are required; never the secrets
                "allow_v1": s.allow_v1,
                "proxy_protocol": s.proxy_protocol,
                # the room: "memory", or the Redis URL without its password
                "redis": s.redacted_redis_url or "memory",
                "redis_prefix": s.redis_prefix if s.redis_url else None,
                "replica_id": getattr(self.dispatcher, "replica", None),
                "relay_advertise": s.relay_advertise,
            },
        )
        if self.relay.limits.enabled and not s.auth and s.host not in LOOPBACK_HOSTS:
            log.warning(
                "relay open to anyone",
                extra={
                    "event": "relay_open",
                    "detail": "no auth secret: anyone who reaches this port can relay traffic "
                    "through it, billed as the server's data transfer; set one "
                    "(--auth-secret-file), cap the relay (--relay-max-bytes, "
                    "--relay-max-per-ip) or turn it off (--no-relay)",
                },
            )
        if budget.lowered(s):
            log.warning(
                "caps lowered to fit the open-files limit",
                extra={
                    "event": "fd_budget",
                    "nofile": budget.nofile,
                    "max_connections": budget.tcp,
                    "asked_max_connections": s.max_connections,
                    "max_http_connections": budget.http,
                    "asked_max_http_connections": s.max_http_connections,
                    "relay_max_sessions": self.relay.limits.max_sessions,
                    "asked_relay_max_sessions": s.relay_max_sessions,
                    "detail": "raise the hard limit (ulimit -Hn, --ulimit nofile=) to get "
                    "the caps asked for",
                },
            )

    async def stop(self) -> None:
        """Close everything at once (no drain)."""
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        if self._server is not None:
            self._server.close()
        loop = self.loop
        for conn in list(self.connections):
            if conn.state is WAITING and conn.waiter is not None:
                self.room.leave(conn.waiter, loop.time())
            conn.abort()
        self.relay.close_all("stop")
        if self._discovery is not None:
            self._discovery.close()
            self._discovery = None
        if self.proxied_discovery is not None:
            self.proxied_discovery.close_all()
        deadline = loop.time() + 2
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await self.dispatcher.close()  # the shared room retires after its connections
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        self.dispatcher.warnings.summaries(final=True)
        if loop.get_exception_handler() == self._on_loop_error:
            loop.set_exception_handler(after_stop(self._old_exception_handler))

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, report not-ready, let requests in flight finish, close the rest.

        v2 waiters still waiting at the end get TIMEOUT (they may retry elsewhere); v1
        waiters are closed, as they would be at their own timeout.
        """
        timeout = self.settings.drain_timeout if timeout is None else timeout
        self.draining = True
        log.info(
            "draining",
            extra={"event": "draining", "open": len(self.connections), "timeout": timeout},
        )
        if self._server is not None:
            self._server.close()
        loop = self.loop
        deadline = loop.time() + timeout
        self.relay.drain_begin()
        while (
            self.reading or self.relay.sessions or self.dispatcher.busy
        ) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.relay.close_all("drain")  # sessions still relaying at the drain's end
        for conn in list(self.connections):
            if conn.state is WAITING:
                conn.expire(drained=True)
            elif conn.state is READING or conn.state is PROXY_HEADER:
                conn.request_timed_out(drained=timeout)
        await self.stop()
        log.info("drained", extra={"event": "drained", "pairings": self.pairings})

    async def __aenter__(self) -> RendezvousServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- status (rendezvous.status.ServerStatus, for the HTTP side) -------------------

    @property
    def ready(self) -> bool:
        return (
            self._server is not None
            and not self.draining
            and len(self.connections) < self.dispatcher.max_connections
            and self.dispatcher.room_ready
        )

    @property
    def not_ready_reason(self) -> str:
        if self.draining:
            return "draining"
        if not self.dispatcher.room_ready:
            return "the shared room is unavailable (Redis unreachable or heartbeat stale)"
        return "not accepting (connection cap reached)"

    def _status(self) -> Literal["ok", "full", "draining", "unavailable"]:
        if self.draining:
            return "draining"
        if self.ready:
            return "ok"
        return "full" if self.dispatcher.room_ready else "unavailable"

    def health(self) -> Health:
        return {
            "status": self._status(),
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "waiting": self.metrics.waiting(),
            "open_connections": len(self.connections),
            "pairings": self.pairings,
        }

    # -- the tick --------------------------------------------------------------------

    def _on_tick(self) -> None:
        loop = self.loop
        now = loop.time()
        deadlines = self.dispatcher.deadlines
        for conn in deadlines.due_requests(now):
            conn.request_timed_out()
        for conn in deadlines.due_waiters(now):
            conn.expire()
        if now >= self._next_purge:
            self.room.purge_tokens(now)
            self._next_purge = now + _token_purge_interval(self.settings)
        self.dispatcher.warnings.summaries()
        self._tick_timer = loop.call_later(self.tick, self._on_tick)

    # -- what the loop reports -----------------------------------------------------------

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler while the server runs (:mod:`rendezvous.loop_errors`)."""
        report_loop_error(
            context,
            self.metrics,
            self.dispatcher.warnings,
            listener_closed=self.draining or self._server is None,
        )

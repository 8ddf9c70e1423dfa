"""The asyncio glue around the room: accept, read one request, answer, close.

Connections are ``asyncio.Protocol`` objects (no streams: a pairing must cost well
under 60 us of CPU). Deadlines (the request deadline, the waiter's expiry) are kept in
insertion-ordered dicts, one per kind of deadline, so they are ordered by expiry too; one
``loop.call_later`` tick sweeps the expired front of each. A timer per connection would
cost more than the rest of a pairing. The pairing decisions live in :mod:`rendezvous.room`; the wire
encoding in :mod:`tcpunch`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
import socket
import time
from typing import Any

from rendezvous import __version__
from rendezvous.logs import log_event
from rendezvous.metrics import Metrics
from rendezvous.room import Paired, Refused, Room, Waiter, Waiting
from rendezvous.settings import Settings
from tcpunch import (
    V1_CONTROL_BYTES,
    Command,
    Endpoint,
    NeedMoreData,
    ProtocolError,
    Reason,
    RequestReader,
    Status,
    V1Request,
    V2Response,
    encode_v2_response,
    pack_endpoint,
)
from tcpunch.request import name_text

log = logging.getLogger("rendezvous")


class State(enum.Enum):
    READING = 1
    WAITING = 2
    DONE = 3


# The members as module globals: ``State.READING`` is a descriptor lookup (~0.1 us on
# CPython 3.11) and the per-connection path tests the state a dozen times.
READING = State.READING
WAITING = State.WAITING
DONE = State.DONE


class Connection(asyncio.Protocol):
    """One rendezvous connection: reads a request, then waits or pairs, then closes."""

    __slots__ = (
        "endpoint",
        "head",
        "packed",
        "protocol",
        "reader",
        "server",
        "state",
        "transport",
        "waiter",
    )

    def __init__(self, server: RendezvousServer) -> None:
        self.server = server
        self.state = DONE
        self.waiter: Waiter | None = None
        self.protocol = "v1"
        self.head = b""
        self.packed: bytes | None = None
        self.transport: Any = None

    # -- asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        ip = peer[0]
        if ":" in ip and ip.startswith("::ffff:"):
            ip = ip[7:]
        self.endpoint = _new_endpoint(Endpoint, (ip, peer[1]))
        connections = server.connections
        if len(connections) >= server.max_connections:
            server.refuse(self, "connection_cap", "the server's connection cap is reached")
            transport.abort()
            return
        if ":" in ip:
            server.refuse(self, "not_ipv4", "TCPunch carries IPv4 endpoints only")
            transport.abort()
            return
        connections.add(self)
        self.state = READING
        server.deadlines_reading[self] = server.loop.time() + server.request_timeout
        self.reader = RequestReader()

    def data_received(self, data: bytes) -> None:
        if self.state is not READING:
            return  # clients send nothing after their request; ignore, never buffer
        # ``head`` (for telling v1 from v2 in refusals) only matters for requests that
        # are not complete after this read: remembered then, not on the common path.
        try:
            request = self.reader.feed(data)
        except ProtocolError as exc:
            self._remember_head(data)
            self._bad_request(exc)
            return
        if request is NeedMoreData:
            self._remember_head(data)
            return
        self._end_reading()
        try:
            self.server.handle_request(self, request)
        except Exception:  # the server never dies of one request
            log.exception("internal error", extra={"event": "internal_error"})
            self.server.metrics.reject("internal_error")
            if self.waiter is not None:
                self.server.abandoned(self)
            self.finish(error=True)

    def eof_received(self) -> bool:
        return False  # close our side too: a client that hung up cannot be answered

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        if self.state is READING:
            self._end_reading()
            self.state = DONE
            if self.reader.buffered:
                server.refuse(self, "incomplete", str(self.reader.eof()))
            else:
                server.refuse(self, "empty", "the connection closed without a request")
        elif self.state is WAITING:
            self.state = DONE
            server.untrack_waiter(self)
            server.abandoned(self)
        self.waiter = None

    # -- helpers ---------------------------------------------------------------------

    @property
    def v1_reply(self) -> bytes:
        """This connection's endpoint as the 8-byte v1 reply (packed once)."""
        packed = self.packed
        if packed is None:
            packed = self.packed = pack_endpoint(*self.endpoint)
        return packed

    def _remember_head(self, data: bytes) -> None:
        if len(self.head) < 100:
            self.head = (self.head + data)[:100]

    @property
    def looks_v2(self) -> bool:
        return b"\0" in self.head

    def _end_reading(self) -> None:
        self.server.deadlines_reading.pop(self, None)
        self.state = DONE

    def _bad_request(self, exc: ProtocolError) -> None:
        self._end_reading()
        if self.looks_v2:
            self.protocol = "v2"
        self.server.refuse(self, _REFUSAL_REASONS.get(exc.reason, "malformed"), str(exc))
        self.finish(error=True)

    def request_timed_out(self, *, drained: float | None = None) -> None:
        """Refuse a request still incomplete at its deadline, or at the end of a drain
        (``drained``: the drain's timeout), so the log says which of the two cut it off."""
        if self.state is not READING:
            return
        self._end_reading()
        self.protocol = "v2" if self.looks_v2 else "v1"
        if drained is not None:
            self.server.refuse(
                self,
                "drain",
                f"request still incomplete when the drain ended after {drained:g} s "
                f"({self.reader.buffered} bytes); the server is shutting down",
            )
        else:
            self.server.refuse(
                self,
                "request_timeout",
                f"no complete request within {self.server.settings.request_timeout:g} s "
                f"({self.reader.buffered} bytes)",
            )
        self.finish(error=True)

    def send_v2(self, status: Status, peer: Endpoint | None = None, token: str | None = None):
        response = V2Response(status, self.endpoint, peer or _ZERO, token or "")
        self.transport.write(encode_v2_response(response))

    def finish(self, *, error: bool = False, payload: bytes | None = None) -> None:
        """Answer (ERROR for v2 when ``error``) and close; the connection is done."""
        if self.state is WAITING:
            self.server.untrack_waiter(self)
        self.state = DONE
        transport = self.transport
        if transport.is_closing():
            return
        if payload is not None:
            transport.write(payload)
        elif error and self.protocol == "v2":
            self.send_v2(Status.ERROR)
        transport.close()

    def expire(self) -> None:
        """The waiter's time is up: TIMEOUT (v2, may resume with its token) or close."""
        if self.state is not WAITING:
            return
        waiter = self.waiter
        self.server.expired(self)
        payload = None
        if self.protocol == "v2" and waiter is not None:
            payload = encode_v2_response(
                V2Response(Status.TIMEOUT, self.endpoint, _ZERO, waiter.token or "")
            )
        self.finish(payload=payload)


# Refusal reasons (metric labels) by the codec's reason code; every other code is "malformed".
_REFUSAL_REASONS = {Reason.OVERSIZED: "oversized", Reason.NOT_UTF8: "not_utf8"}

_ZERO = Endpoint("0.0.0.0", 0)
_PAIRED = Status.PAIRED  # enum members as globals: cheaper to read (see READING)
_WAITING = Status.WAITING
_new_endpoint = tuple.__new__  # Endpoint(ip, port) without NamedTuple's Python __new__


def _due(deadlines: dict[Connection, float], now: float) -> list[Connection]:
    """Take the connections whose deadline has passed off the front of ``deadlines``."""
    due = []
    for conn, deadline in deadlines.items():
        if deadline > now:
            break
        due.append(conn)
    for conn in due:
        del deadlines[conn]
    return due


def settings_purge_interval(settings: Settings) -> float:
    """How often forgotten reconnect tokens are dropped (half a grace, at least 1 s)."""
    return max(1.0, settings.effective_token_grace / 2)


def _listening_socket(host: str, port: int, settings: Settings) -> socket.socket:
    """A listener with TCP keepalive set: accepted sockets inherit it on Linux."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.keepalive_interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.keepalive_count)
        sock.bind((host, port))
        sock.listen(settings.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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
        self.max_connections = settings.max_connections  # read once per connection
        self.request_timeout = settings.request_timeout
        self.room = Room(
            max_waiting_per_ip=settings.max_waiting_per_ip,
            token_grace=settings.effective_token_grace,
        )
        self.metrics = Metrics(
            waiting=self.room.__len__,
            open_connections=lambda: len(self.connections),
            max_connections=settings.max_connections,
            ready=lambda: self.ready,
        )
        # Deadlines by kind, each dict in insertion order = expiry order (one timeout each).
        self.deadlines_reading: dict[Connection, float] = {}
        self.deadlines_v1: dict[Connection, float] = {}
        self.deadlines_v2: dict[Connection, float] = {}
        shortest = min(settings.request_timeout, settings.peer_timeout, settings.v1_peer_timeout)
        self.tick = min(0.5, max(0.01, shortest / 10))
        self.name_pattern = re.compile(settings.name_pattern) if settings.name_pattern else None
        self.connections: set[Connection] = set()
        self.pairings = 0
        self.draining = False
        self.started_at = time.time()
        self.port = 0
        self.http_port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: Any = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._next_purge = 0.0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        s = self.settings
        sock = _listening_socket(s.host, s.port, s)
        self.port = sock.getsockname()[1]
        self._server = await self.loop.create_server(
            functools.partial(Connection, self), sock=sock, backlog=s.backlog
        )
        if s.http_port is not None:
            from rendezvous.http import start_http

            try:
                self._http, self.http_port = await start_http(
                    self, s.http_host or s.host, s.http_port
                )
            except BaseException:
                self._server.close()
                raise
        self._next_purge = self.loop.time() + settings_purge_interval(s)
        self._tick_timer = self.loop.call_later(self.tick, self._on_tick)
        log.info(
            "listening",
            extra={
                "event": "listening",
                "host": s.host,
                "port": self.port,
                "http_port": self.http_port,
                "loop": type(self.loop).__module__,
                "loop_setting": s.loop,
                "version": __version__,
                # the effective settings, so an operator sees RENDEZVOUS_* took effect
                "peer_timeout": s.peer_timeout,
                "v1_peer_timeout": s.v1_peer_timeout,
                "request_timeout": s.request_timeout,
                "token_grace": s.effective_token_grace,
                "max_connections": s.max_connections,
                "max_waiting_per_ip": s.max_waiting_per_ip,
                "name_pattern": s.name_pattern,
                "allow_delete_pairs": s.allow_delete_pairs,
                "drain_timeout": s.drain_timeout,
            },
        )

    async def stop(self) -> None:
        """Close everything at once (no drain)."""
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.state is WAITING and conn.waiter is not None:
                self.room.leave(conn.waiter, self.loop.time())
            elif conn.state is READING:
                conn._end_reading()
            conn.state = DONE
            conn.transport.abort()
        deadline = self.loop.time() + 2
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

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
        deadline = self.loop.time() + timeout
        while self.reading and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.state is WAITING:
                conn.expire()
            elif conn.state is READING:
                conn.request_timed_out(drained=timeout)
        await self.stop()
        log.info("drained", extra={"event": "drained", "pairings": self.pairings})

    async def __aenter__(self) -> RendezvousServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def ready(self) -> bool:
        return (
            self._server is not None
            and not self.draining
            and len(self.connections) < self.settings.max_connections
        )

    def health(self) -> dict[str, Any]:
        return {
            "status": "draining" if self.draining else ("ok" if self.ready else "full"),
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "waiting": len(self.room),
            "open_connections": len(self.connections),
            "pairings": self.pairings,
        }

    @property
    def reading(self) -> int:
        """Connections whose request is not complete yet (requests in flight)."""
        return len(self.deadlines_reading)

    def untrack_waiter(self, conn: Connection) -> None:
        (self.deadlines_v2 if conn.protocol == "v2" else self.deadlines_v1).pop(conn, None)

    def _on_tick(self) -> None:
        now = self.loop.time()
        for conn in _due(self.deadlines_reading, now):
            conn.request_timed_out()
        for deadlines in (self.deadlines_v1, self.deadlines_v2):
            for conn in _due(deadlines, now):
                conn.expire()
        if now >= self._next_purge:
            self.room.purge_tokens(now)
            self._next_purge = now + settings_purge_interval(self.settings)
        self._tick_timer = self.loop.call_later(self.tick, self._on_tick)

    # -- events from connections -----------------------------------------------------

    def refuse(self, conn: Connection, reason: str, detail: str) -> None:
        self.metrics.reject(reason)
        log.warning(
            "refused",
            extra={
                "event": "refused",
                "reason": reason,
                "detail": detail,
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
            },
        )

    def handle_request(self, conn: Connection, request: Any) -> None:
        kind = type(request)
        if kind is Command or (kind is not V1Request and isinstance(request, Command)):
            self.metrics.connections["command"] += 1
            self._command(conn, request)
            return
        if kind is V1Request or isinstance(request, V1Request):
            name = request.name
            token = None
            self.metrics.connections["v1"] += 1
            if V1_CONTROL_BYTES.search(name):
                self.refuse(conn, "junk", f"control bytes in v1 name {name[:40]!r}")
                conn.finish(error=True)
                return
        else:
            conn.protocol = "v2"
            name = request.name.encode("utf-8")
            token = request.token or None
            self.metrics.connections["v2"] += 1
        if self.name_pattern is not None and not self.name_pattern.fullmatch(name_text(name)):
            self.refuse(conn, "name_pattern", f"name {name_text(name)!r} does not match")
            conn.finish(error=True)
            return
        now = self.loop.time()
        room = self.room
        current = room.waiter(name)
        if current is not None and current.handle.transport.is_closing():
            # A waiter whose connection is going away is never handed out.
            room.leave(current, now)
            self.untrack_waiter(current.handle)
            current.handle.state = DONE
            self.abandoned(current.handle, waiter=current)
        outcome = room.arrive(name, conn, conn.endpoint, conn.protocol, now, token)
        if isinstance(outcome, Paired):
            self._paired(conn, outcome, now)
        elif isinstance(outcome, Waiting):
            if conn.protocol == "v1":
                conn.transport.write(conn.v1_reply)  # v1: your own endpoint, at once
            self._waiting(conn, outcome)
        else:
            assert isinstance(outcome, Refused)
            self.refuse(conn, outcome.reason, outcome.detail)
            conn.finish(error=True)

    def _paired(self, conn: Connection, outcome: Paired, now: float) -> None:
        waiter = outcome.waiter
        other: Connection = waiter.handle
        other.waiter = None
        if other.protocol == "v1":
            other.finish(payload=conn.v1_reply)
        else:
            other.finish(
                payload=encode_v2_response(
                    V2Response(_PAIRED, other.endpoint, conn.endpoint, waiter.token or "")
                )
            )
        if conn.protocol == "v1":
            # Its own endpoint and its peer's in one write: the same 16 bytes as two.
            conn.finish(payload=conn.v1_reply + other.v1_reply)
        else:
            conn.finish(
                payload=encode_v2_response(
                    V2Response(_PAIRED, conn.endpoint, other.endpoint, outcome.token or "")
                )
            )
        kind = conn.protocol if conn.protocol == other.protocol else "mixed"
        self.pairings += 1
        metrics = self.metrics
        metrics.pairings[kind] += 1
        waited = now - waiter.since
        metrics.observe_wait(waited)
        if log.isEnabledFor(logging.INFO):
            # One line per pairing: log_event builds it without a LogRecord where it can;
            # the endpoints as str(Endpoint) gives them, without two calls.
            waiter_ip, waiter_port = other.endpoint
            newcomer_ip, newcomer_port = conn.endpoint
            fields = {
                "event": "paired",
                "pairing": name_text(waiter.name),
                "protocol": kind,
                "waiter": f"{waiter_ip}:{waiter_port}",
                "newcomer": f"{newcomer_ip}:{newcomer_port}",
                "wait_seconds": round(waited, 6),
            }
            if kind == "mixed":  # which side spoke which (a v1 FMI rank meeting a v2 one)
                fields["waiter_protocol"] = other.protocol
                fields["newcomer_protocol"] = conn.protocol
            log_event(log, logging.INFO, "paired", fields)

    def _waiting(self, conn: Connection, outcome: Waiting) -> None:
        waiter = outcome.waiter
        if outcome.replaced is not None:
            old: Connection = outcome.replaced.handle
            old.waiter = None
            old.finish()
            log.info(
                "replaced",
                extra={
                    "event": "replaced",
                    "pairing": name_text(waiter.name),
                    "old": str(old.endpoint),
                    "new": str(conn.endpoint),
                },
            )
        conn.state = WAITING
        conn.waiter = waiter
        s = self.settings
        if conn.protocol == "v2":
            self.deadlines_v2[conn] = waiter.since + s.peer_timeout
            conn.send_v2(_WAITING, token=waiter.token)
        else:
            self.deadlines_v1[conn] = waiter.since + s.v1_peer_timeout
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "waiting",
                extra={
                    "event": "waiting",
                    "pairing": name_text(waiter.name),
                    "client": str(conn.endpoint),
                    "protocol": conn.protocol,
                },
            )

    def _command(self, conn: Connection, command: Command) -> None:
        now = self.loop.time()
        if command.kind == "delete_pairs":
            if not self.settings.allow_delete_pairs:
                self.refuse(
                    conn,
                    "delete_pairs_disabled",
                    "delete_pairs is off; start the server with --allow-delete-pairs",
                )
                conn.finish()
                return
            removed = self.room.clear(now)
        else:
            one = self.room.remove_name(command.name, now)
            removed = [one] if one is not None else []
        for waiter in removed:
            other: Connection = waiter.handle
            other.waiter = None
            other.finish(error=True)
        log.info(
            command.kind,
            extra={
                "event": command.kind,
                "pairing": name_text(command.name),
                "removed": len(removed),
                "client": str(conn.endpoint),
            },
        )
        conn.finish()

    def abandoned(self, conn: Connection, waiter: Waiter | None = None) -> None:
        """A waiter hung up (or its connection is closing) before pairing."""
        waiter = waiter or conn.waiter
        if waiter is None:
            return
        self.room.leave(waiter, self.loop.time())  # a no-op when already gone
        conn.waiter = None
        self.metrics.abandoned += 1
        log.info(
            "abandoned",
            extra={
                "event": "abandoned",
                "pairing": name_text(waiter.name),
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
                "waited_seconds": round(self.loop.time() - waiter.since, 3),
            },
        )

    def expired(self, conn: Connection) -> None:
        waiter = conn.waiter
        if waiter is None:
            return
        self.room.leave(waiter, self.loop.time())
        conn.waiter = None
        self.metrics.expired += 1
        log.info(
            "expired",
            extra={
                "event": "expired",
                "pairing": name_text(waiter.name),
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
            },
        )

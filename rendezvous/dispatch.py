"""Dispatch: a complete request, then the room's outcome, then reply bytes, metrics, a log.

``Dispatcher.dispatch`` picks a handler by the request's type (``HANDLERS``); a new kind
of request (a relay session) is a new handler there. The handlers ask the
:class:`~rendezvous.room.Room` and act on its outcome: write the replies, close,
count, log. The dispatcher also holds what every connection shares (the room, the
deadlines, the open connections, the metrics), so a connection needs one reference.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rendezvous.connection import Connection
from rendezvous.credentials import AuthPolicy, Decision
from rendezvous.deadlines import Deadlines
from rendezvous.logs import log_event
from rendezvous.metrics import Metrics
from rendezvous.ratelimit import LogRateLimit
from rendezvous.room import Paired, Refused, Room, Waiter, Waiting
from rendezvous.settings import Settings
from tcpunch import (
    V1_CONTROL_BYTES,
    Command,
    Status,
    V1Request,
    V2Request,
    V2Response,
    encode_v2_response,
)
from tcpunch.nathint import hint_for
from tcpunch.relay import ExtRequest, ObserveRequest, RelayRequest
from tcpunch.request import Request, name_text

if TYPE_CHECKING:
    from rendezvous.relay import RelayHub

log = logging.getLogger("rendezvous")

_PAIRED = Status.PAIRED  # enum members as globals: cheaper to read
_WAITING = Status.WAITING


class Dispatcher:
    """Decides what each complete request gets, and holds the state connections share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.time: Callable[[], float] = _not_started  # the loop's clock, from start()
        self.max_connections = settings.max_connections  # read once per connection
        self.request_timeout = settings.request_timeout
        self.proxy_protocol = settings.proxy_protocol  # a PROXY v2 header before requests
        self.peer_timeout = settings.peer_timeout
        self.v1_peer_timeout = settings.v1_peer_timeout
        self.room: Room[Connection] = Room(
            max_waiting_per_ip=settings.max_waiting_per_ip,
            token_grace=settings.effective_token_grace,
            max_tokens=settings.max_tokens,
            max_tokens_per_ip=settings.max_tokens_per_ip,
        )
        self.metrics = Metrics(waiting=self.room.__len__, room=self.room)
        # WARNING lines per refusal reason, a few a second; the rest summarised.
        self.warnings = LogRateLimit(log, self._clock)
        self.deadlines: Deadlines[Connection] = Deadlines()
        self.connections: set[Connection] = set()
        self.name_pattern = re.compile(settings.name_pattern) if settings.name_pattern else None
        self.pairings = 0
        self.relay: RelayHub | None = None  # the server's relay hub, set at start()
        # With auth secrets: who may register names (None: everyone, as without auth).
        self.auth: AuthPolicy | None = (
            AuthPolicy.create(settings.auth_secrets, settings.allow_v1)
            if settings.auth_secrets
            else None
        )
        self.wall_clock: Callable[[], float] = time.time  # credential expiries are Unix times

    def _clock(self) -> float:
        return self.time()

    # -- the room's life (the in-memory room has none; see rendezvous.shared_dispatch) --

    async def open(self, port: int) -> None:
        """Called by the server's start() once it listens on ``port``."""

    async def close(self) -> None:
        """Called by the server's stop(), after its connections are closed."""

    @property
    def room_ready(self) -> bool:
        """Whether the room can take arrivals (for /readyz)."""
        return True

    @property
    def busy(self) -> int:
        """Requests whose room outcome is still coming (a drain waits for them)."""
        return 0

    def dispatch(self, conn: Connection, request: Request | ExtRequest) -> None:
        handler = _HANDLERS.get(type(request))
        if handler is None:  # a subclass of a request type
            handler = next(h for kind, h in _HANDLERS.items() if isinstance(request, kind))
        handler(self, conn, request)

    # -- requests --------------------------------------------------------------------

    def _v1(self, conn: Connection, request: Request) -> None:
        if TYPE_CHECKING:  # _HANDLERS chose this by type
            assert isinstance(request, V1Request)
        name = request.name
        self.metrics.connections["v1"] += 1
        if V1_CONTROL_BYTES.search(name):
            self.refuse(conn, "junk", f"control bytes in v1 name {name[:40]!r}")
            conn.finish(error=True)
            return
        auth = self.auth
        if auth is not None and not self._admitted(conn, auth.check_v1(name), name):
            return
        self._arrive(conn, name, None)

    def _v2(self, conn: Connection, request: Request) -> None:
        if TYPE_CHECKING:  # _HANDLERS chose this by type
            assert isinstance(request, V2Request)
        conn.protocol = "v2"
        conn.flags = request.flags  # NAT hints (tcpunch.nathint) read at pairing
        self.metrics.connections["v2"] += 1
        name = request.name.encode("utf-8")
        auth = self.auth
        if auth is not None:
            # Every request is checked, token resumes too: they carry the credential again.
            decision = auth.check_v2(request.name, request.credential, self.wall_clock())
            if not self._admitted(conn, decision, name):
                return
        self._arrive(conn, name, request.token or None)

    def _admitted(self, conn: Connection, decision: Decision, name: bytes) -> bool:
        """Whether the auth policy lets the request on; if not, refused and closed (v2:
        ERROR). The log says why, never the credential (a bearer token until it expires)."""
        if decision.allowed:
            return True
        why = _AUTH_REFUSALS.get(decision.reason, decision.reason)
        self.refuse(conn, decision.reason, f"name {name_text(name)!r}: {why}")
        conn.finish(error=True)
        return False

    def _arrive(self, conn: Connection, name: bytes, token: str | None) -> None:
        if self.name_pattern is not None and not self.name_pattern.fullmatch(name_text(name)):
            self.refuse(conn, "name_pattern", f"name {name_text(name)!r} does not match")
            conn.finish(error=True)
            return
        now = self.time()
        room = self.room
        current = room.waiter(name)
        if current is not None and current.handle.transport.is_closing():
            # A waiter whose connection is going away is never handed out.
            room.leave(current, now)
            current.handle.lost()
            self.abandoned(current.handle, waiter=current)
        outcome = room.arrive(name, conn, conn.endpoint, conn.protocol, now, token)
        if type(outcome) is Paired:
            self._paired(conn, outcome, now)
        elif type(outcome) is Waiting:
            if conn.protocol == "v1":
                conn.transport.write(conn.v1_reply)  # v1: your own endpoint, at once
            self._waiting(conn, outcome)
        else:
            assert isinstance(outcome, Refused)
            self.refuse(conn, outcome.reason, outcome.detail)
            conn.finish(error=True)

    def _paired(self, conn: Connection, outcome: Paired[Connection], now: float) -> None:
        waiter = outcome.waiter
        other = waiter.handle
        other.waiter = None
        # Each side's NAT class (v2 flag bits 2-3) goes to the other, if it asked (bit 1).
        if other.protocol == "v1":
            other.finish(payload=conn.v1_reply)
        else:
            hint = hint_for(other.flags, conn.flags)
            response = V2Response(_PAIRED, other.endpoint, conn.endpoint, waiter.token or "", hint)
            other.finish(payload=encode_v2_response(response))
        if conn.protocol == "v1":
            # Its own endpoint and its peer's in one write: the same 16 bytes as two.
            conn.finish(payload=conn.v1_reply + other.v1_reply)
        else:
            hint = hint_for(conn.flags, other.flags)
            response = V2Response(_PAIRED, conn.endpoint, other.endpoint, outcome.token or "", hint)
            conn.finish(payload=encode_v2_response(response))
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
            fields: dict[str, object] = {
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

    def _waiting(self, conn: Connection, outcome: Waiting[Connection]) -> None:
        waiter = outcome.waiter
        if outcome.replaced is not None:
            old = outcome.replaced.handle
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
        conn.park(waiter)
        if conn.protocol == "v2":
            self.deadlines.v2[conn] = waiter.since + self.peer_timeout
            conn.send_v2(_WAITING, token=waiter.token)
        else:
            self.deadlines.v1[conn] = waiter.since + self.v1_peer_timeout
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

    def _command(self, conn: Connection, command: Request) -> None:
        if TYPE_CHECKING:  # _HANDLERS chose this by type
            assert isinstance(command, Command)
        self.metrics.connections["command"] += 1
        auth = self.auth
        if auth is not None:
            decision = auth.check_command(command.kind, command.name)
            if not self._admitted(conn, decision, command.name or command.kind.encode()):
                return
        now = self.time()
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
            other = waiter.handle
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

    def _observe(self, conn: Connection, request: Request | ExtRequest) -> None:
        """NAT discovery on the rendezvous port: the observed endpoint, 8 bytes as v1."""
        if self.relay is not None:
            self.relay.metrics.discovery += 1
        conn.finish(payload=conn.v1_reply)

    def _relay(self, conn: Connection, request: Request | ExtRequest) -> None:
        if TYPE_CHECKING:  # _HANDLERS chose this by type
            assert isinstance(request, RelayRequest)
        if self.relay is None:  # a Dispatcher without a server (unit tests)
            conn.finish(error=True)
            return
        self.relay.request(conn, request)

    # -- events from connections -----------------------------------------------------

    def refuse(self, conn: Connection, reason: str, detail: str) -> None:
        """Count a refusal under ``reason`` and log it (rate-limited per reason; resets
        and other probes' noise at DEBUG, see ``_REFUSAL_LEVELS``)."""
        self.metrics.reject(reason)
        level = _REFUSAL_LEVELS.get(reason, logging.WARNING)
        if not log.isEnabledFor(level) or not self.warnings.allow(reason):
            return
        log.log(
            level,
            "refused",
            extra={
                "event": "refused",
                "reason": reason,
                "detail": detail,
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
            },
        )

    def refuse_unread(self, conn: Connection, reason: str, detail: str) -> None:
        """Refuse a connection whose request was never complete: it counts as a
        connection of the protocol it looked like (v2 when a NUL came), else "unknown"."""
        self.metrics.connections["v2" if conn.looks_v2 else "unknown"] += 1
        self.refuse(conn, reason, detail)

    def abandoned(self, conn: Connection, waiter: Waiter[Connection] | None = None) -> None:
        """A waiter hung up (or its connection is closing) before pairing."""
        waiter = waiter or conn.waiter
        if waiter is None:
            return
        self.room.leave(waiter, self.time())  # a no-op when already gone
        conn.waiter = None
        self.metrics.abandoned += 1
        log.info(
            "abandoned",
            extra={
                "event": "abandoned",
                "pairing": name_text(waiter.name),
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
                "waited_seconds": round(self.time() - waiter.since, 3),
            },
        )

    def expired(self, conn: Connection, *, drained: bool = False) -> None:
        """A waiter's time is up, or the drain closes it (counted apart)."""
        waiter = conn.waiter
        if waiter is None:
            return
        self.room.leave(waiter, self.time())
        conn.waiter = None
        if drained:
            self.metrics.drained += 1
        else:
            self.metrics.expired += 1
        event = "drained_waiter" if drained else "expired"
        log.info(
            event,
            extra={
                "event": event,
                "pairing": name_text(waiter.name),
                "client": str(conn.endpoint),
                "protocol": conn.protocol,
            },
        )


# What each auth refusal means, for the log line (the credential itself is never logged).
_AUTH_REFUSALS = {
    "no_credential": "v2 request without a credential, and this server requires one "
    "(mint one with `rendezvous credential --prefix P`)",
    "malformed": "the credential is not '<expiry>:<prefix>:<password>'",
    "forged": "the credential was not minted with this server's auth secret",
    "expired": "the credential has expired",
    "wrong_prefix": "the credential is for names with another prefix",
    "v1_not_allowed": "v1 requests and commands cannot carry a credential; only names "
    "matching --allow-v1 are let on (delete_pairs never)",
}


def _not_started() -> float:
    raise RuntimeError("the server is not started: await server.start() first")


# Refusal reasons logged below WARNING: what port scanners and TCP probes do all day.
_REFUSAL_LEVELS = {"reset": logging.DEBUG}

# The handler of each request type. A request of a type not listed (nor a subclass of
# one) cannot come out of tcpunch's reader.
_HANDLERS: dict[type, Callable[[Dispatcher, Connection, Any], None]] = {
    V1Request: Dispatcher._v1,
    V2Request: Dispatcher._v2,
    Command: Dispatcher._command,
    RelayRequest: Dispatcher._relay,
    ObserveRequest: Dispatcher._observe,
}

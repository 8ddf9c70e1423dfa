"""The relay: when both ends of a pairing ask, the server splices their bytes.

A relay request arrives on the rendezvous port (:mod:`tcpunch.relay`); the connection
hands its transport over (``Connection.hand_off``) and a :class:`RelayEnd` protocol takes
it. The first end of a key (pairing name, session id) waits; the second makes a
:class:`RelaySession` and both get ACCEPTED. From then on each end's bytes are written to
the other's transport as they come, never inspected (issue 11's handshake runs through
it end to end, so the relay sees only ciphertext).

Backpressure: each transport's write buffer has a high and a low water mark; above the
high one asyncio calls ``pause_writing`` on the receiving end, which pauses *reading*
from the sending end until ``resume_writing``. Memory per session is therefore bounded
by two write buffers (high water plus one read chunk each), whatever the peers do.
Across sessions, ``max_buffered`` caps the sum (:mod:`rendezvous.relay_memory`).

Limits: sessions (waiting ends count) globally, relay ends per source IP, bytes and
duration per session, idle time; one timer of the hub checks the time-based ones. Every
refusal and every end has a reason, counted in :mod:`rendezvous.relay_metrics`.

Multi-replica (issue 16): the matching key is (name, session id), known to both ends
before they connect; with ``--redis --relay-advertise`` the replica the first end reached
owns the key and later ends are forwarded to it (:mod:`rendezvous.relay_forward`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from rendezvous.relay_flush import Flushing, reset
from rendezvous.relay_limits import RelayLimits
from rendezvous.relay_memory import BufferCap
from rendezvous.relay_metrics import RelayMetrics
from tcpunch.relay import RelayRefusal, RelayReply, RelayRequest, RelayStatus, encode_relay_reply
from tcpunch.request import name_text

if TYPE_CHECKING:
    from rendezvous.connection import Connection

log = logging.getLogger("rendezvous")

__all__ = ["CredentialCheck", "Key", "RelayEnd", "RelayHub", "RelayLimits", "RelaySession"]

Key = tuple[bytes, bytes]  # (pairing name, session id)
CredentialCheck = Callable[[RelayRequest], bool]

_WAITING = encode_relay_reply(RelayReply(RelayStatus.WAITING_FOR_PEER))
_ACCEPTED = encode_relay_reply(RelayReply(RelayStatus.ACCEPTED))


class RelayEnd(asyncio.Protocol):
    """One relayed socket: forwards what it reads to its peer's transport."""

    __slots__ = (
        "accounted",
        "blocked",
        "eof",
        "held",
        "hub",
        "ip",
        "key",
        "peer",
        "session",
        "transport",
        "waiting_until",
    )

    def __init__(self, hub: RelayHub, transport: asyncio.Transport, ip: str, key: Key) -> None:
        self.hub = hub
        self.transport = transport
        self.ip = ip
        self.key = key
        self.peer: RelayEnd | None = None
        self.session: RelaySession | None = None
        self.eof = False
        self.waiting_until = 0.0
        self.accounted = 0  # our write buffer's size when the hub last looked
        self.blocked = False  # reading paused: our peer's write buffer is full
        self.held = False  # reading paused: the relay's buffers are over max_buffered

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:  # bytes before ACCEPTED: this client breaks the protocol
            self.hub.drop_waiter(self, "early_data")
            return
        session.forward(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        session = self.session
        if session is None:
            return False
        session.half_closed(self)
        return True  # keep the transport open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.flushing.gone(self)
        session = self.session
        if session is not None:
            session.end("reset" if exc is not None else "closed")
        else:
            self.hub.drop_waiter(self, "abandoned")

    def pause_writing(self) -> None:  # our write buffer is full: stop reading our peer
        peer = self.peer
        if peer is not None:
            peer.blocked = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None:
            peer.blocked = False
            self.hub.memory.account(self)
            if not peer.held and not peer.transport.is_closing():
                peer.transport.resume_reading()


class RelaySession:
    """Two ends splicing; ``end`` closes both and logs the session once."""

    __slots__ = ("a", "active", "b", "bytes", "ended", "hub", "key", "last", "started")

    def __init__(self, hub: RelayHub, key: Key, a: RelayEnd, b: RelayEnd, now: float) -> None:
        self.hub = hub
        self.key = key
        self.a, self.b = a, b
        self.started = self.last = now
        self.bytes = 0
        self.active = False  # bytes moved since the last tick (cheaper than a clock read)
        self.ended = False

    def forward(self, source: RelayEnd, data: bytes) -> None:
        size = len(data)
        self.bytes += size
        self.hub.metrics.bytes += size
        self.active = True
        limit = self.hub.limits.max_bytes
        if limit and self.bytes > limit:
            self.end("bytes_limit")
            return
        peer = source.peer
        if peer is None:
            return
        transport = peer.transport
        transport.write(data)
        # the global cap (inlined: this runs for every read)
        buffered = transport.get_write_buffer_size()
        if buffered != peer.accounted:
            memory = self.hub.memory
            memory.total += buffered - peer.accounted
            peer.accounted = buffered
            if memory.limit and memory.total > memory.limit and buffered > memory.fair_share():
                memory.hold(source)

    def half_closed(self, source: RelayEnd) -> None:
        peer = source.peer
        if peer is None or peer.eof:
            self.end("closed")
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()

    def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        hub = self.hub
        graceful = reason == "closed"
        for end in (self.a, self.b):
            hub.memory.forget(end)
            if graceful and end.transport.get_write_buffer_size():
                hub.flushing.add(end, hub.time())  # counted until its bytes are out
                continue
            hub.per_ip[end.ip] -= 1
            if not hub.per_ip[end.ip]:
                del hub.per_ip[end.ip]
            if graceful:
                end.transport.close()
            else:  # a reset: the peers must not take a cut-off for the end of the data
                reset(end.transport)
        hub.sessions.pop(self.key, None)
        duration = hub.time() - self.started
        hub.metrics.ended(reason, duration)
        log.info(
            "relay_end",
            extra={
                "event": "relay_end",
                "pairing": name_text(self.key[0]),
                "reason": reason,
                "bytes": self.bytes,
                "duration_seconds": round(duration, 6),
                "a": self.a.ip,
                "b": self.b.ip,
            },
        )


class RelayHub:
    """The waiting ends and active sessions of one server, their limits and timer."""

    def __init__(
        self,
        limits: RelayLimits,
        metrics: RelayMetrics,
        credential_check: CredentialCheck | None = None,
        name_pattern: re.Pattern[str] | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.credential_check = credential_check  # None: no auth secret, credential ignored
        self.name_pattern = name_pattern  # --name-pattern: relay names obey it as pairs do
        self.waiting: dict[Key, RelayEnd] = {}
        self.sessions: dict[Key, RelaySession] = {}
        self.flushing = Flushing(self._release, metrics)  # closing with bytes left to write
        self.per_ip: Counter[str] = Counter()
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.forwarding: Callable[[], int] = lambda: 0  # ends forwarded to other replicas
        self.memory = BufferCap(limits.max_buffered, metrics, self.sessions)
        metrics.active = self.sessions.__len__
        metrics.waiting = self.waiting.__len__
        metrics.buffered = self.buffered

    def time(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.memory.start(loop)
        self._timer = loop.call_later(self._tick_interval(), self._tick)

    def _tick_interval(self) -> float:
        limits = self.limits
        spans = [s for s in (limits.idle_timeout, limits.max_duration, limits.wait_timeout) if s]
        return min(0.5, max(0.02, min(spans) / 10)) if spans else 0.5

    def buffered(self) -> int:
        """Bytes in the relay's write buffers now (the memory backpressure bounds)."""
        return sum(
            end.transport.get_write_buffer_size()
            for session in self.sessions.values()
            for end in (session.a, session.b)
            if not end.transport.is_closing()
        )

    # -- requests --------------------------------------------------------------------

    def request(self, conn: Connection, request: RelayRequest) -> None:
        ip = conn.endpoint[0]
        transport = conn.hand_off()
        key = (request.name, request.session)
        end = RelayEnd(self, transport, ip, key)
        transport.set_protocol(end)
        self.metrics.requests += 1
        limits = self.limits
        waiter = self.waiting.get(key)
        if waiter is not None and waiter.transport.is_closing():
            self.drop_waiter(waiter, "abandoned")
            waiter = None
        refusal = None
        if not limits.enabled:
            refusal = RelayRefusal.DISABLED
        elif self.draining:
            refusal = RelayRefusal.DRAINING
        elif not self.name_allowed(request.name):
            refusal = RelayRefusal.NAME_PATTERN
        elif self.credential_check is not None and not self.credential_check(request):
            refusal = RelayRefusal.BAD_CREDENTIAL
        elif key in self.sessions:
            refusal = RelayRefusal.BUSY
        elif (
            waiter is None
            and len(self.waiting) + len(self.sessions) + len(self.flushing) + self.forwarding()
            >= limits.max_sessions
        ):
            refusal = RelayRefusal.SERVER_FULL
        elif self.per_ip[ip] >= limits.max_per_ip:
            refusal = RelayRefusal.PER_IP_CAP
        if refusal is not None:
            self.refuse(end, refusal)
            return
        self.per_ip[ip] += 1
        transport.set_write_buffer_limits(high=limits.high_water, low=limits.low_water)
        if waiter is None:
            self.waiting[key] = end
            end.waiting_until = self.time() + limits.wait_timeout
            transport.write(_WAITING)
            return
        del self.waiting[key]
        waiter.peer, end.peer = end, waiter
        session = RelaySession(self, key, waiter, end, self.time())
        waiter.session = end.session = session
        self.sessions[key] = session
        waiter.transport.write(_ACCEPTED)
        transport.write(_ACCEPTED)
        self.metrics.started += 1
        log.info(
            "relay_start",
            extra={
                "event": "relay_start",
                "pairing": name_text(key[0]),
                "a": waiter.ip,
                "b": ip,
                "waited_seconds": round(
                    self.time() - (waiter.waiting_until - limits.wait_timeout), 6
                ),
            },
        )

    def name_allowed(self, name: bytes) -> bool:
        pattern = self.name_pattern
        return pattern is None or pattern.fullmatch(name_text(name)) is not None

    def refuse(self, end: RelayEnd, refusal: RelayRefusal) -> None:
        reason = refusal.name.lower()
        self.metrics.refuse(reason)
        log.warning(
            "relay_refused",
            extra={
                "event": "relay_refused",
                "reason": reason,
                "pairing": name_text(end.key[0]),
                "client": end.ip,
            },
        )
        end.session = None
        end.transport.write(encode_relay_reply(RelayReply(RelayStatus.REFUSED, refusal)))
        end.transport.close()

    def drop_waiter(self, end: RelayEnd, reason: str) -> None:
        """A waiting end leaves (hung up, sent early bytes, timed out, drain or stop).

        A hung-up end is no refusal (nobody refused it): it counts as a relay end with
        reason ``abandoned``; the drain refuses waiters as DRAINING, whenever it comes."""
        if self.waiting.get(end.key) is not end:
            return
        del self.waiting[end.key]
        self.per_ip[end.ip] -= 1
        if not self.per_ip[end.ip]:
            del self.per_ip[end.ip]
        if reason == "peer_timeout":
            self.refuse(end, RelayRefusal.PEER_TIMEOUT)
        elif reason in ("draining", "drain"):
            self.refuse(end, RelayRefusal.DRAINING)
        elif reason == "abandoned":
            self.metrics.abandoned()
            end.transport.abort()
        else:
            self.metrics.refuse(reason)
            end.transport.abort()

    def _release(self, end: RelayEnd) -> None:
        """A flushing end is gone: its place in the per-IP cap is free again."""
        self.per_ip[end.ip] -= 1
        if not self.per_ip[end.ip]:
            del self.per_ip[end.ip]

    # -- time and shutdown -----------------------------------------------------------

    def _tick(self) -> None:
        now = self.time()
        limits = self.limits
        for end in [e for e in self.waiting.values() if e.waiting_until <= now]:
            self.drop_waiter(end, "peer_timeout")
        if self.flushing:
            self.flushing.check(now, limits.idle_timeout or limits.wait_timeout)
        idle, longest = limits.idle_timeout, limits.max_duration
        for session in list(self.sessions.values()):
            if session.active:
                session.active = False
                session.last = now
            if longest and now - session.started >= longest:
                session.end("duration_limit")
            elif idle and now - session.last >= idle:
                session.end("idle")
        if self._loop is not None:
            self._timer = self._loop.call_later(self._tick_interval(), self._tick)

    def drain_begin(self) -> None:
        """No new sessions; waiting ends are refused (their peer cannot come any more)."""
        self.draining = True
        for end in list(self.waiting.values()):
            self.drop_waiter(end, "draining")

    def close_all(self, reason: str) -> None:
        """End every session (a reset to both ends) and every waiting end."""
        for end in list(self.waiting.values()):
            self.drop_waiter(end, reason)
        for session in list(self.sessions.values()):
            session.end(reason)
        self.flushing.close_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.memory.close()

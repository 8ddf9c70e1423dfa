"""Relays across replicas (``--redis`` with ``--relay-advertise HOST``): both ends of a
relay session meet on one replica, the *owner*: the replica the first end reached.

The first relay request of a key (name, session id) records its replica's address in
Redis (``SET NX``, one atomic script); a later end that reaches another replica is
forwarded there over TCP: its relay request is sent on to the owner (after a PROXY v2
header naming the client when the replicas run with ``--proxy-protocol``, so the
owner's per-IP caps and logs see the client) and the bytes are spliced both ways with
backpressure. Relays spread like first arrivals do (the balancer's choice), so relay
capacity grows with the replica count; a forwarded end costs its replica one extra
copy. Without ``--relay-advertise`` each replica relays on its own, as a single server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING

from rendezvous.proxy_protocol import build_header
from rendezvous.redis_presence import RedisUnavailable
from rendezvous.relay_flush import reset
from tcpunch.relay import (
    RelayRefusal,
    RelayReply,
    RelayRequest,
    RelayStatus,
    encode_relay_reply,
    encode_relay_request,
)
from tcpunch.request import name_text

if TYPE_CHECKING:
    from rendezvous.connection import Connection
    from rendezvous.relay import RelayHub
    from rendezvous.shared_room import SharedRoom

log = logging.getLogger("rendezvous")

# The owner of a relay key: whoever set it first (until it expires).
OWNER = """
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# An owner that cannot be reached (its replica died) gives the key up, if still its.
DISOWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_FULL = encode_relay_reply(RelayReply(RelayStatus.REFUSED, RelayRefusal.SERVER_FULL))
_UNREACHABLE = encode_relay_reply(RelayReply(RelayStatus.REFUSED, RelayRefusal.DRAINING))


class _Side(asyncio.Protocol):
    """One socket of a forwarded relay end: what it reads goes to the other side."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if TYPE_CHECKING:  # a stream transport (uvloop's is no asyncio.Transport subclass)
            assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        self.link.active = True
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
            self.link.bytes += len(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:  # our buffer is full: stop reading the other side
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.link.active = True  # a stalled reader is reading again
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.resume_reading()


class _Link:
    """A client's relay end and its connection to the owner replica."""

    def __init__(self, forwarder: RelayForwarder) -> None:
        self.forwarder = forwarder
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.bytes = 0
        self.closed = False
        self.active = False  # bytes moved since the forwarder's last tick
        self.last = 0.0  # loop time of the last tick that saw bytes move
        self.pairing = ""  # for the log line

    def close(self, *, abort: bool = False) -> None:
        """Close both sockets; ``abort``: at once, with a reset that drops what is
        buffered (a plain close first flushes it, in our buffer and then the kernel's,
        which for a reader that stopped is never)."""
        if self.closed:
            return
        self.closed = True
        self.forwarder.links.discard(self)
        for side in (self.client, self.upstream):
            if side.transport is not None:
                if abort:
                    reset(side.transport)
                else:
                    side.transport.close()


class RelayForwarder:
    """Routes relay requests to their key's owner replica (see the module docstring)."""

    def __init__(
        self,
        room: SharedRoom,
        hub: RelayHub,
        address: str,
        *,
        key_ttl: float,
        proxy_protocol: bool,
        connect_timeout: float = 2.0,
    ) -> None:
        self.room = room
        self.hub = hub
        self.address = address  # "host:port": where other replicas reach this one
        self.key_ttl_ms = int(key_ttl * 1000)
        self.proxy_protocol = proxy_protocol
        self.connect_timeout = connect_timeout
        self._owner = room.client.register_script(OWNER)
        self._disown = room.client.register_script(DISOWN)
        self.links: set[_Link] = set()
        self._timer: asyncio.TimerHandle | None = None
        hub.forwarding = self.links.__len__  # a link holds 2 fds, as a session: one cap
        self.forwarded = 0  # relay ends sent on to another replica (a metric)
        self.unreachable = 0  # ... whose owner could not be reached

    def route_here(self, request: RelayRequest) -> bool:
        """Requests the local hub refuses anyway (relay off, draining, a name that
        --name-pattern refuses, a bad credential) never cost a Redis call or a forward."""
        hub = self.hub
        check = hub.credential_check
        return (
            not hub.limits.enabled
            or hub.draining
            or not hub.name_allowed(request.name)
            or (check is not None and not check(request))
        )

    async def route(self, conn: Connection, request: RelayRequest) -> None:
        from rendezvous.connection import ARRIVING

        if self.route_here(request):
            self.hub.request(conn, request)
            return
        digest = hashlib.sha256(request.name + b"\0" + request.session).hexdigest()
        key = f"{self.room.prefix}relay:{digest}"
        try:
            raw = await self.room.presence.call(
                self._owner(keys=[key], args=[self.address, self.key_ttl_ms]), "relay owner"
            )
            owner = raw.decode() if isinstance(raw, bytes) else str(raw)
        except RedisUnavailable:
            owner = self.address  # relay here: both ends meet if both reached this one
        if conn.state is not ARRIVING:
            return  # hung up meanwhile
        if owner == self.address:
            self.hub.request(conn, request)
            return
        hub = self.hub
        if len(self.links) + len(hub.waiting) + len(hub.sessions) >= hub.limits.max_sessions:
            # forwarded ends share the relay's cap (and its descriptor budget); ends
            # this replica owns were capped by the hub
            self.hub.metrics.refuse("server_full")
            conn.finish(payload=_FULL)
            return
        if not await self._forward(conn, request, owner):
            # the next request of this key (both ends retry) takes ownership anew
            with contextlib.suppress(RedisUnavailable):
                await self.room.presence.call(
                    self._disown(keys=[key], args=[owner]), "relay disown"
                )

    async def _forward(self, conn: Connection, request: RelayRequest, owner: str) -> bool:
        """False when the owner could not be reached (the end is refused)."""
        host, _, port = owner.rpartition(":")
        client = conn.hand_off()
        client.pause_reading()  # nothing is read before the owner is connected
        link = _Link(self)
        link.pairing = name_text(request.name)
        link.client.transport = client
        client.set_protocol(link.client)
        self.links.add(link)
        loop = asyncio.get_running_loop()
        link.last = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self._tick_interval(), self._tick)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: link.upstream, host, int(port)),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            self.unreachable += 1
            log.warning(
                "relay_forward_failed",
                extra={
                    "event": "relay_forward_failed",
                    "pairing": name_text(request.name),
                    "owner": owner,
                    "detail": f"{type(exc).__name__}: {exc}",
                },
            )
            if not client.is_closing():
                client.write(_UNREACHABLE)
            link.close()
            return False
        if link.closed:  # the client hung up while we connected
            transport.close()
            return True
        head = b""
        if self.proxy_protocol:
            head = build_header((conn.endpoint.ip, conn.endpoint.port), (host, int(port)))
        transport.write(head + encode_relay_request(request))
        client.resume_reading()
        self.forwarded += 1
        log.info(
            "relay_forward",
            extra={
                "event": "relay_forward",
                "pairing": name_text(request.name),
                "client": str(conn.endpoint),
                "owner": owner,
            },
        )
        return True

    def _tick_interval(self) -> float:
        idle = self.hub.limits.idle_timeout
        return min(0.5, max(0.02, idle / 10)) if idle else 0.5

    def _tick(self) -> None:
        """Close links that moved no byte either way for the relay's idle timeout. The
        owner ends such a session itself, but a link whose client stopped reading has its
        upstream paused, so it would never see the owner's reset and would hold its place
        in this replica's cap (and two descriptors) for good."""
        loop = asyncio.get_running_loop()
        now, idle = loop.time(), self.hub.limits.idle_timeout
        for link in list(self.links):
            if link.active:
                link.active, link.last = False, now
            elif idle and now - link.last >= idle:
                log.info(
                    "relay_forward_end",
                    extra={
                        "event": "relay_forward_end",
                        "pairing": link.pairing,
                        "reason": "idle",
                        "bytes": link.bytes,
                    },
                )
                link.close(abort=True)
        self._timer = loop.call_later(self._tick_interval(), self._tick) if self.links else None

    def close_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for link in list(self.links):
            link.close()

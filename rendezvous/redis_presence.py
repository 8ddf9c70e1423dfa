"""A replica's presence in Redis: its heartbeat, its notice channel, and its readiness.

Every Redis call has a deadline (``op_timeout``) and errors become
:class:`RedisUnavailable` quickly; the loops here retry with a capped backoff, so a
replica recovers by itself when Redis returns: it re-subscribes, beats again, and
reconciles its local waiters with what Redis still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio import Redis

from rendezvous import shared_room_scripts as scripts

log = logging.getLogger("rendezvous.shared_room")
T = TypeVar("T")

# What a Redis that is down, restarting, loading or unreachable raises.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    OSError,
    asyncio.TimeoutError,
)
_LISTEN_ERRORS: tuple[type[Exception], ...] = (RuntimeError, *REDIS_ERRORS)  # incl. ours


class RedisUnavailable(RuntimeError):
    """Redis did not answer within the deadline; ``reason`` is the refusal/metric label.

    Raised instead of waiting: the caller refuses the client (v2 ERROR, v1 close) and
    counts it; the replica reports not ready until Redis answers again.
    """

    reason = "redis_unavailable"


async def bounded(call: Awaitable[T], timeout: float, what: str) -> T:
    """``await call`` within ``timeout`` seconds, Redis failures as RedisUnavailable."""
    try:
        return await asyncio.wait_for(call, timeout)
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(
            f"Redis did not answer {what} within {timeout:.2f} s ({type(exc).__name__}); "
            "check that Redis is running and reachable (--redis URL)"
        ) from exc


class ReplicaPresence:
    """Heartbeat and notice subscription of one replica.

    ``on_notice(data)`` gets each raw notice on this replica's channel; ``on_lapse()``
    runs when this replica's waiters are gone from Redis (its heartbeat lapsed, or Redis
    lost its data); ``on_resubscribed()`` runs after a re-subscription, when notices
    may have been missed; ``before_beat()`` runs before each heartbeat (retries of
    departures that failed while Redis was away).
    """

    def __init__(
        self,
        client: Redis,
        prefix: str,
        replica: str,
        *,
        interval: float,
        ttl: float,
        op_timeout: float,
        token_grace: float,
        on_notice: Callable[[bytes], None],
        on_lapse: Callable[[], None],
        on_resubscribed: Callable[[], Awaitable[None]],
        before_beat: Callable[[], Awaitable[None]],
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError(f"heartbeat interval {interval} must be below its ttl {ttl}")
        self.client = client
        self.prefix = prefix
        self.replica = replica
        self.channel = f"{prefix}ch:{replica}"
        self.interval, self.ttl, self.op_timeout = interval, ttl, op_timeout
        self._grace_ms = int(token_grace * 1000)
        self._on_notice, self._on_lapse = on_notice, on_lapse
        self._on_resubscribed, self._before_beat = on_resubscribed, before_beat
        self._beat_script = client.register_script(scripts.BEAT)
        self._retire_script = client.register_script(scripts.RETIRE)
        self._last_beat: float | None = None  # monotonic time of the last good beat
        self._lapse_reported = False
        self._subscribed = False
        self._tasks: list[asyncio.Task[None]] = []
        self.reaped = 0  # waiters of dead replicas this replica reaped (a metric)
        self.lapses = 0

    @property
    def ready(self) -> bool:
        """Beating within the ttl and listening: safe to take and hold waiters."""
        fresh = self._last_beat is not None and time.monotonic() - self._last_beat < self.ttl
        return fresh and self._subscribed

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._beat_loop(), name=f"heartbeat {self.replica}"),
            asyncio.create_task(self._listen_loop(), name=f"notices {self.replica}"),
        ]

    async def wait_ready(self, timeout: float) -> None:
        """Wait until ready; RedisUnavailable after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"replica {self.replica} not ready within {timeout} s")
            await asyncio.sleep(0.02)

    async def stop(self, retire: bool = True) -> None:
        """Stop beating and listening; ``retire`` hands this replica's waiters back at
        once (a clean shutdown) instead of letting the heartbeat expire."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._subscribed = False
        self._last_beat = None
        if retire:
            with contextlib.suppress(RedisUnavailable):
                await self.call(
                    self._retire_script(args=[self.prefix, self.replica, self._grace_ms]),
                    "retire",
                )

    def stop_beating(self) -> None:
        """Tests: this replica freezes as far as Redis can tell (its heartbeat expires)."""
        self._tasks[0].cancel()

    def start_beating(self) -> None:
        """Tests: the frozen replica wakes up (and learns what it lost)."""
        self._tasks[0] = asyncio.create_task(self._beat_loop(), name=f"heartbeat {self.replica}")

    async def call(self, awaitable: Awaitable[T], what: str) -> T:
        try:
            return await bounded(awaitable, self.op_timeout, what)
        except RedisUnavailable as exc:
            if isinstance(exc.__cause__, redis.exceptions.ConnectionError):
                # one connection found closed: the idle ones likely are too (Redis restart)
                with contextlib.suppress(*REDIS_ERRORS):
                    pool = self.client.connection_pool
                    closing = pool.disconnect(inuse_connections=False)
                    await asyncio.wait_for(closing, self.op_timeout)
            raise

    async def _beat_loop(self) -> None:
        failed = False
        while True:
            try:
                if failed:
                    # Idle pooled connections may be to a Redis that went away; a call
                    # on one would fail once more after Redis is back. Reconnect lazily.
                    pool = self.client.connection_pool
                    await self.call(pool.disconnect(inuse_connections=False), "disconnect")
                await self._before_beat()
                lapsed, reaped = await self.call(
                    self._beat_script(
                        args=[self.prefix, self.replica, int(self.ttl * 1000), self._grace_ms]
                    ),
                    "the heartbeat",
                )
                first = self._last_beat is None
                if first or lapsed:
                    log.info("replica %s: heartbeat registered in Redis", self.replica)
                self._last_beat = time.monotonic()
                self.reaped += int(reaped)
                if lapsed and not first:
                    self._lapse()  # Redis forgot us: whatever we held there is gone
                self._lapse_reported = failed = False
            except RedisUnavailable as exc:
                failed = True
                last = self._last_beat
                late = last is not None and time.monotonic() - last >= self.ttl
                if late and not self._lapse_reported:
                    log.warning("replica %s: heartbeat lapsed: %s", self.replica, exc)
                    self._lapse()
                    self._lapse_reported = True
            await asyncio.sleep(self.interval)

    def _lapse(self) -> None:
        self.lapses += 1
        self._on_lapse()

    async def _listen_loop(self) -> None:
        backoff, first = 0.05, True
        while True:
            pubsub = self.client.pubsub()
            try:
                await self.call(pubsub.subscribe(self.channel), "the subscription")
                self._subscribed, backoff = True, 0.05
                if not first:
                    log.info("replica %s: notices re-subscribed", self.replica)
                    await self._on_resubscribed()
                first = False
                while True:
                    message: dict[str, Any] | None = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                    if message is not None and message.get("type") == "message":
                        self._on_notice(message["data"])
            except _LISTEN_ERRORS as exc:
                if self._subscribed:
                    log.warning("replica %s: notices interrupted: %s", self.replica, exc)
                self._subscribed = False
            finally:
                self._subscribed = False
                with contextlib.suppress(*_LISTEN_ERRORS):
                    closing = pubsub.aclose()  # type: ignore[no-untyped-call]
                    await asyncio.wait_for(closing, self.op_timeout)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

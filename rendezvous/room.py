"""The pairing logic: who waits under which name, with no I/O and an explicit clock.

The server's connections are opaque ``handle`` objects here (the room is generic in
their type); the room decides, :mod:`rendezvous.dispatch` sends bytes and closes
sockets. Names are keyed as bytes: a v1 name is raw bytes and a v2 name is UTF-8
encoded, so a v1 and a v2 client that use the same name pair with each other.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from tcpunch import Endpoint

# The TCPunch wire protocol version a client spoke (not an ``asyncio.Protocol``).
ProtocolVersion = Literal["v1", "v2"]

H = TypeVar("H")  # the handle: whatever the server keeps per connection


@dataclass(eq=False)
class Waiter(Generic[H]):
    """One waiting entry. ``token`` is set for v2 waiters only."""

    name: bytes
    handle: H
    endpoint: Endpoint
    protocol: ProtocolVersion
    since: float
    token: str | None = None


@dataclass(frozen=True)
class Paired(Generic[H]):
    """The arrival pairs with ``waiter``, which has left the room."""

    waiter: Waiter[H]
    token: str | None = None  # the newcomer's token (v2 reconnects keep theirs)


@dataclass(frozen=True)
class Waiting(Generic[H]):
    """The arrival now waits as ``waiter``; ``replaced`` is the older connection of the
    same token that it displaced (the glue closes it)."""

    waiter: Waiter[H]
    replaced: Waiter[H] | None = None


@dataclass(frozen=True)
class Refused:
    """The arrival is refused; ``reason`` is the metric label, ``detail`` the log text."""

    reason: str
    detail: str


Outcome = Paired[H] | Waiting[H] | Refused


@dataclass(slots=True)
class _TokenRecord(Generic[H]):
    name: bytes
    waiter: Waiter[H] | None  # the connection currently waiting with this token
    valid_until: float | None  # None while its waiter waits


def new_token() -> str:
    return str(uuid.uuid4())


def token_digest(token: str) -> str:
    """What a log may say about a reconnect token: the first 8 hex digits of its SHA-256.

    Enough to match two lines about one token; the token itself lets its holder take
    over the wait, so it never goes into a log line.
    """
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]


@dataclass
class Room(Generic[H]):
    """Waiting entries, reconnect tokens and the per-source-IP waiting cap.

    ``token_grace`` is how long a token stays valid after its waiter left without
    pairing (timed out or hung up): at least one more peer timeout, so a client told
    TIMEOUT can come back and resume under the same name.

    Tokens in their grace hold memory after their connection is gone, so they are
    bounded: ``max_tokens`` in all and ``max_tokens_per_ip`` per source address; beyond
    either, the oldest token in grace (of all, or of that address) is dropped and counted
    in ``tokens_dropped``. Tokens of connections still waiting are bounded by the
    connection cap.
    """

    max_waiting_per_ip: int = 1000
    token_grace: float = 60.0
    token_factory: Callable[[], str] = new_token
    max_tokens: int = 100_000
    max_tokens_per_ip: int = 1000
    tokens_dropped: dict[str, int] = field(
        default_factory=lambda: {"global_cap": 0, "per_ip_cap": 0}
    )
    _waiting: dict[bytes, Waiter[H]] = field(default_factory=dict)
    _per_ip: dict[str, int] = field(default_factory=dict)
    _tokens: dict[str, _TokenRecord[H]] = field(default_factory=dict)
    # Tokens in their grace, oldest first (one grace for all: also the expiry order),
    # with the address they came from; and the same per address.
    _graced: dict[str, str] = field(default_factory=dict)
    _graced_per_ip: dict[str, dict[str, None]] = field(default_factory=dict)

    # -- queries ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._waiting)

    def waiter(self, name: bytes) -> Waiter[H] | None:
        return self._waiting.get(name)

    def waiting_from(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    @property
    def graced_token_count(self) -> int:
        """Tokens whose waiter left (kept for a resume within the grace)."""
        return len(self._graced)

    # -- arrivals --------------------------------------------------------------------

    def arrive(
        self,
        name: bytes,
        handle: H,
        endpoint: Endpoint,
        protocol: ProtocolVersion,
        now: float,
        token: str | None = None,
    ) -> Outcome[H]:
        """Pair with the waiter under ``name`` or wait: atomic, one waiter per name.

        ``token`` is a v2 reconnect token (None or "" for a fresh arrival).
        """
        replaced: Waiter[H] | None = None
        if token:
            record = self._tokens.get(token)
            if record is None or (record.valid_until is not None and now > record.valid_until):
                self._forget(token)
                return Refused(
                    "bad_token", f"reconnect token {token_digest(token)} is unknown or expired"
                )
            if record.name != name:
                return Refused(
                    "bad_token",
                    f"reconnect token {token_digest(token)} belongs to another pairing name",
                )
            if record.waiter is not None:
                replaced = record.waiter
                self._remove(replaced)
                record.waiter = None
            else:
                self._ungrace(token)  # resumed: its grace is over
        waiter = self._waiting.get(name)
        if waiter is not None:
            self._remove(waiter)
            if waiter.token is not None:
                self._forget(waiter.token)
            if token:
                self._forget(token)
            # A displaced connection of the same token is simply dropped.
            return Paired(waiter, token or None)
        if replaced is None and self._per_ip.get(endpoint.ip, 0) >= self.max_waiting_per_ip:
            return Refused(
                "per_ip_waiting_cap",
                f"{endpoint.ip} already has {self.max_waiting_per_ip} waiting entries",
            )
        if protocol == "v2":
            if not token:
                token = self.token_factory()
                while token in self._tokens:  # pragma: no cover - uuid4 collision
                    token = self.token_factory()
        else:
            token = None
        waiter = Waiter(name, handle, endpoint, protocol, now, token)
        self._waiting[name] = waiter
        self._per_ip[endpoint.ip] = self._per_ip.get(endpoint.ip, 0) + 1
        if token:
            record = self._tokens.get(token)
            if record is None:
                self._tokens[token] = _TokenRecord(name, waiter, None)
            else:  # a resume: the same record, waiting again
                record.waiter, record.valid_until = waiter, None
        return Waiting(waiter, replaced)

    # -- departures ------------------------------------------------------------------

    def leave(self, waiter: Waiter[H], now: float) -> bool:
        """The waiter left without pairing (timeout, hang-up, removal).

        Its token stays valid for ``token_grace`` more seconds. Returns False when the
        waiter was no longer in the room (already paired or replaced).
        """
        if self._waiting.get(waiter.name) is not waiter:
            return False
        self._remove(waiter)
        if waiter.token is not None:
            record = self._tokens.get(waiter.token)
            if record is not None and record.waiter is waiter:
                record.waiter = None
                record.valid_until = now + self.token_grace
                self._grace(waiter.token, waiter.endpoint.ip)
        return True

    def remove_name(self, name: bytes, now: float) -> Waiter[H] | None:
        """The ``remove_pair_<name>`` command: drop one waiting entry, if any."""
        waiter = self._waiting.get(name)
        if waiter is not None:
            self.leave(waiter, now)
        return waiter

    def clear(self, now: float) -> list[Waiter[H]]:
        """The ``delete_pairs`` command: drop every waiting entry."""
        waiters = list(self._waiting.values())
        for waiter in waiters:
            self.leave(waiter, now)
        return waiters

    def purge_tokens(self, now: float) -> int:
        """Forget tokens whose grace has run out; returns how many. The graced tokens are
        in expiry order, so this takes the expired front and stops."""
        stale = []
        tokens = self._tokens
        for key in self._graced:
            record = tokens.get(key)
            if record is not None and record.valid_until is not None and now <= record.valid_until:
                break
            stale.append(key)
        for key in stale:
            self._forget(key)
        return len(stale)

    def _grace(self, token: str, ip: str) -> None:
        """``token`` starts its grace: the newest of all and of ``ip``; drop the oldest
        beyond the caps."""
        self._ungrace(token)
        self._graced[token] = ip
        mine = self._graced_per_ip.setdefault(ip, {})
        mine[token] = None
        if len(mine) > self.max_tokens_per_ip:
            self._forget(next(iter(mine)))
            self.tokens_dropped["per_ip_cap"] += 1
        if len(self._graced) > self.max_tokens:
            self._forget(next(iter(self._graced)))
            self.tokens_dropped["global_cap"] += 1

    def _ungrace(self, token: str) -> None:
        ip = self._graced.pop(token, None)
        if ip is not None:
            mine = self._graced_per_ip[ip]
            del mine[token]
            if not mine:
                del self._graced_per_ip[ip]

    def _forget(self, token: str) -> None:
        self._tokens.pop(token, None)
        self._ungrace(token)

    def _remove(self, waiter: Waiter[H]) -> None:
        del self._waiting[waiter.name]
        count = self._per_ip[waiter.endpoint.ip] - 1
        if count:
            self._per_ip[waiter.endpoint.ip] = count
        else:
            del self._per_ip[waiter.endpoint.ip]

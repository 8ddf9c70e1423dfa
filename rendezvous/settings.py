"""The server's settings: one frozen dataclass that the CLI, the embedded server and the
tests all build, so every knob has one name and one default."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from rendezvous.credentials import AuthPolicy

LoopKind = Literal["auto", "asyncio", "uvloop"]


MIN_EMF_INTERVAL = 1.0
"""Shortest ``--emf-interval`` (seconds); 0 turns EMF off."""


def dimension_value_problem(value: str) -> str | None:
    """What breaks CloudWatch's rules for a dimension value (1-1024 characters, ASCII
    only, no control characters, at least one that is not whitespace), or None."""
    if not 1 <= len(value) <= 1024:
        return f"it must be 1-1024 characters long, not {len(value)}"
    if not value.isascii():
        return "it must be ASCII only (no accents, no other scripts)"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "it must not contain ASCII control characters (tab, newline, ...)"
    if value.isspace():
        return "it must contain at least one character that is not whitespace"
    return None


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 10000
    http_host: str | None = None  # None: same as host
    http_port: int | None = 10001  # None: no HTTP endpoint
    peer_timeout: float = 60.0  # v2 waiters get TIMEOUT after this
    v1_peer_timeout: float = 900.0  # v1 waits are closed after this
    request_timeout: float = 5.0  # a request must be complete within this
    token_grace: float | None = None  # None: one more peer timeout
    max_connections: int = 15000  # open rendezvous connections, all states
    max_waiting_per_ip: int = 1000
    allow_delete_pairs: bool = False
    name_pattern: str | None = None  # a regex every pairing name must fully match
    drain_timeout: float = 10.0
    keepalive_idle: int = 60  # TCP keepalive so a waiter whose host vanished is noticed
    keepalive_interval: int = 10
    keepalive_count: int = 5
    backlog: int = 4096
    loop: LoopKind = "auto"
    log_level: str = "INFO"
    emf_interval: float = 0.0  # seconds between CloudWatch EMF lines on stdout; 0: none
    emf_namespace: str = "Rendezvous"
    emf_service: str = "rendezvous"  # the value of the EMF metrics' Service dimension
    discovery_port: int | None = None  # NAT discovery port; None: off, 0: any free port
    relay: bool = True  # relay sessions on the rendezvous port (issue 12)
    relay_max_sessions: int = 1000  # relay sessions, waiting ends included
    # relay ends (sockets) from one source IP: ranks behind one NAT gateway share its
    # address and each relayed link takes 2 ends, so this is well above a job's links
    relay_max_per_ip: int = 1000
    relay_max_bytes: int = 0  # bytes per relay session, both directions; 0: no limit
    relay_max_buffered: int = 64 << 20  # bytes in all relay write buffers; 0: no cap
    relay_idle_timeout: float = 300.0  # a relay session without a byte this long ends; 0: never
    relay_max_duration: float = 0.0  # seconds a relay session may last; 0: no limit
    # hardening: what a public port meets (scanners, probes, slow HTTP, token floods)
    max_http_connections: int = 256  # open HTTP connections; the oldest idle one makes room
    http_timeout: float = 5.0  # seconds for a complete HTTP request, and idle keep-alive
    max_tokens: int = 100_000  # v2 reconnect tokens in their grace, in all
    max_tokens_per_ip: int = 1000  # ... and per source IP address
    fd_reserve: int = 64  # descriptors kept out of both caps (operator, logs, listeners)
    log_buffer: int = 1 << 20  # characters of log lines queued for stderr before drops
    # Auth (issue 11): the secrets credentials are checked against (current first, then
    # older ones still accepted while a rotation runs); None: auth off, nothing checked.
    auth_secrets: tuple[bytes, ...] | None = field(default=None, repr=False)
    allow_v1: str | None = None  # with auth: a regex v1 names may fully match to pass
    # Replicas (issue 16): the shared room in Redis; the URL may hold a password, so it
    # is never in a repr or a log line (``redacted_redis_url`` is).
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "rendezvous:"  # keys and channels, so deployments share a Redis
    replica_id: str | None = None  # None: host-pid-random
    proxy_protocol: bool = False  # every connection starts with a PROXY v2 header
    relay_advertise: str | None = None  # --redis: the host other replicas reach us at

    @property
    def redacted_redis_url(self) -> str | None:
        """The Redis URL for logs: its password (and user) replaced by ``***``."""
        return None if self.redis_url is None else redact_url(self.redis_url)

    @property
    def auth(self) -> bool:
        """Whether clients need credentials to register names."""
        return bool(self.auth_secrets)

    def __post_init__(self) -> None:
        for name in (
            "peer_timeout",
            "v1_peer_timeout",
            "request_timeout",
            "drain_timeout",
            "http_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not math.isfinite(self.emf_interval) or 0 < self.emf_interval < MIN_EMF_INTERVAL:
            raise ValueError(
                f"--emf-interval must be 0 (off) or a finite number of seconds, at least "
                f"{MIN_EMF_INTERVAL:g} (one line a second is CloudWatch's finest resolution), "
                f"got {self.emf_interval}"
            )
        if self.emf_interval < 0:
            raise ValueError(f"--emf-interval must be 0 (off) or positive, got {self.emf_interval}")
        if not re.fullmatch(r"[A-Za-z0-9._#:/ -]{1,255}", self.emf_namespace) or (
            self.emf_namespace.startswith("AWS/")
        ):
            raise ValueError(
                f"--emf-namespace {self.emf_namespace!r} is not a CloudWatch namespace: use "
                "1-255 letters, digits and . - _ / # : or space, not starting with AWS/"
            )
        problem = dimension_value_problem(self.emf_service)
        if problem:
            raise ValueError(
                f"--emf-service {self.emf_service!r} is not a CloudWatch dimension value: {problem}"
            )
        if self.max_connections < 1 or self.max_waiting_per_ip < 1:
            raise ValueError("max_connections and max_waiting_per_ip must be at least 1")
        for name in ("max_http_connections", "max_tokens", "max_tokens_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.log_buffer < 1024:
            raise ValueError(f"log_buffer must be at least 1024, got {self.log_buffer}")
        if self.fd_reserve < 0:
            raise ValueError(f"fd_reserve must be 0 or more, got {self.fd_reserve}")
        for flag, port in (("--port", self.port), ("--http-port", self.http_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{flag} must be in 0..65535 (0: any free port), got {port}")
        if self.http_port is not None and self.http_port == self.port != 0:
            http_host = self.http_host or self.host
            wildcard = ("0.0.0.0", "::", "")
            if http_host == self.host or http_host in wildcard or self.host in wildcard:
                raise ValueError(
                    f"--port and --http-port are both {self.port} on the same address: give "
                    "the HTTP port another number (default 10001), or --no-http"
                )
        if self.discovery_port is not None and not 0 <= self.discovery_port <= 65535:
            raise ValueError(f"--discovery-port must be in 0..65535, got {self.discovery_port}")
        if self.discovery_port and self.discovery_port in (self.port, self.http_port):
            raise ValueError(
                f"--discovery-port {self.discovery_port} is already the rendezvous or HTTP "
                "port: choose another (default 10002), or 0 to turn discovery off"
            )
        if self.relay_max_sessions < 1 or self.relay_max_per_ip < 1:
            raise ValueError("--relay-max-sessions and --relay-max-per-ip must be at least 1")
        for name in (
            "relay_max_bytes",
            "relay_idle_timeout",
            "relay_max_duration",
            "relay_max_buffered",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 (no limit) or positive")
        if self.name_pattern is not None:
            try:
                re.compile(self.name_pattern)
            except re.error as exc:
                raise ValueError(
                    f"--name-pattern {self.name_pattern!r} is not a regex: {exc}"
                ) from exc
        self._check_auth()
        self._check_replicas()

    def _check_replicas(self) -> None:
        if self.redis_url is not None:
            scheme = self.redis_url.partition("://")[0]
            if scheme not in ("redis", "rediss", "unix") or "://" not in self.redis_url:
                raise ValueError(
                    f"--redis {redact_url(self.redis_url)!r} is not a Redis URL: use "
                    "redis://HOST:6379/0 (rediss:// for TLS, a password as redis://:PW@HOST)"
                )
        elif self.replica_id is not None:
            raise ValueError("--replica-id only applies with --redis")
        if self.replica_id is not None and not re.fullmatch(
            r"[A-Za-z0-9_.-]{1,64}", self.replica_id
        ):
            raise ValueError(f"--replica-id {self.replica_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if self.relay_advertise is not None and (
            self.redis_url is None
            or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", self.relay_advertise)
        ):
            raise ValueError(
                "--relay-advertise takes this replica's address as other replicas reach "
                "it (a host name or IP, e.g. the task's private IP), with --redis"
            )
        if not self.redis_prefix or len(self.redis_prefix) > 100:
            raise ValueError("--redis-prefix must be 1-100 characters")

    def _check_auth(self) -> None:
        if self.auth_secrets is not None:
            # The secrets' strength and the pattern, checked as the dispatcher will use them.
            AuthPolicy.create(self.auth_secrets, self.allow_v1)
        elif self.allow_v1 is not None:
            raise ValueError(
                "--allow-v1 only applies with auth on: give --auth-secret-file or set "
                "RENDEZVOUS_AUTH_SECRET (without auth every v1 name is allowed anyway)"
            )

    @property
    def effective_token_grace(self) -> float:
        return self.peer_timeout if self.token_grace is None else self.token_grace


def redact_url(url: str) -> str:
    """``scheme://***@host:port/db``: whatever stood before the last ``@`` (user,
    password) is replaced, so the URL can be logged. The last ``@`` of the whole URL,
    not of the authority: a password holding ``/``, ``?`` or ``#`` would otherwise end
    the authority early and be shown in full."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    if "?" in rest:  # redis-py also reads ?password=
        rest = rest.partition("?")[0] + "?***"
    return f"{scheme}://{rest}"

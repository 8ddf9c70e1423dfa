"""What the HTTP side may read of the server: a narrow interface, so :mod:`rendezvous.http`
needs no import of the server (and there is no import cycle)."""

from __future__ import annotations

from typing import Literal, Protocol, TypedDict

from rendezvous.metrics import Metrics


class Health(TypedDict):
    """The ``/health`` JSON."""

    status: Literal["ok", "full", "draining", "unavailable"]  # unavailable: Redis (--redis)
    version: str
    uptime_seconds: float
    waiting: int
    open_connections: int
    pairings: int


class ServerStatus(Protocol):
    """Ready or not and why, the health JSON, the metrics."""

    @property
    def ready(self) -> bool: ...

    @property
    def draining(self) -> bool: ...

    @property
    def metrics(self) -> Metrics: ...

    def health(self) -> Health: ...

"""The relay's limits, and how the server's settings set them.

Frozen: ``RendezvousServer.start`` replaces the whole value when the descriptor budget
lowers ``max_sessions``. Re-exported by :mod:`rendezvous.relay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rendezvous.settings import Settings


@dataclass(frozen=True)
class RelayLimits:
    enabled: bool = True
    max_sessions: int = 1000  # sessions, waiting ends included
    max_per_ip: int = 1000  # relay ends (sockets) from one source IP (NAT gateways share one)
    max_bytes: int = 0  # per session, both directions; 0: no limit
    idle_timeout: float = 300.0  # no byte either way for this long ends it; 0: never
    max_duration: float = 0.0  # seconds; 0: no limit
    wait_timeout: float = 60.0  # the first end waits this long for the second
    high_water: int = 1 << 20  # write buffer bytes that pause the sender
    low_water: int = 256 << 10  # ... and resume it
    max_buffered: int = 64 << 20  # bytes in all write buffers that hold senders; 0: no cap


def relay_limits(settings: Settings) -> RelayLimits:
    """The limits ``--relay-*`` (and ``--peer-timeout``, for the first end's wait) ask for."""
    return RelayLimits(
        enabled=settings.relay,
        max_sessions=settings.relay_max_sessions,
        max_per_ip=settings.relay_max_per_ip,
        max_bytes=settings.relay_max_bytes,
        max_buffered=settings.relay_max_buffered,
        idle_timeout=settings.relay_idle_timeout,
        max_duration=settings.relay_max_duration,
        wait_timeout=settings.peer_timeout,
    )

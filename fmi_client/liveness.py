"""TCP keepalive settings for punched links, so a peer that vanished (a frozen Lambda,
a host gone from the network) makes a waiting recv() fail instead of blocking forever."""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

#: Liveness of punched connections (seconds, probes): an idle connection whose peer vanished
#: (a frozen Lambda, a host gone from the network) fails after about IDLE + INTERVAL * COUNT.
KEEPALIVE_IDLE = 15
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 4


@dataclass(frozen=True)
class Liveness:
    """TCP keepalive (and optionally TCP_USER_TIMEOUT) settings for a punched socket."""

    idle: float = KEEPALIVE_IDLE
    interval: float = KEEPALIVE_INTERVAL
    count: int = KEEPALIVE_COUNT
    user_timeout: float | None = None

    def check(self) -> None:
        if self.idle < 1 or self.interval < 1:
            raise ValueError(
                f"keepalive_idle and keepalive_interval are whole seconds >= 1, not "
                f"{self.idle!r} and {self.interval!r}"
            )
        if not 1 <= self.count <= 127:
            raise ValueError(f"keepalive_count must be in 1..127 (Linux), not {self.count!r}")
        if self.user_timeout is not None and self.user_timeout <= 0:
            raise ValueError(
                f"user_timeout must be positive seconds or None, not {self.user_timeout!r}"
            )

    def apply(self, sock: socket.socket) -> None:
        """Set what this platform has (Linux: all; macOS: no TCP_USER_TIMEOUT)."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle_option = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
        for option, value in (
            (idle_option, math.ceil(self.idle)),
            (getattr(socket, "TCP_KEEPINTVL", None), math.ceil(self.interval)),
            (getattr(socket, "TCP_KEEPCNT", None), self.count),
        ):
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
        if self.user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            milliseconds = max(1, math.ceil(self.user_timeout * 1000))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)

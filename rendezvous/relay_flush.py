"""Relay ends that are closing with bytes still to write.

A session that ends "closed" (both sides sent EOF) closes its transports gracefully, so
what is buffered still goes out. A receiver that never reads would keep such a
transport, its descriptor and up to a write buffer of bytes forever, outside every cap
once the session is gone; repeated, that exhausts the server. So such an end keeps its
place in the caps (the hub counts it beside sessions and in its source address's relay
ends) until its bytes are out, and is reset once its buffer has not shrunk for the idle
timeout (``rendezvous_relay_ended_total{reason="flush_stalled"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from rendezvous.relay_metrics import RelayMetrics

if TYPE_CHECKING:
    from rendezvous.relay import RelayEnd

_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with a reset: the peer must not take a cut-off for the end of the data."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    transport.abort()  # type: ignore[attr-defined]  # every transport the relay holds


class Flushing:
    """The closing ends and, for each, (bytes left, when that last shrank)."""

    def __init__(self, release: Callable[[RelayEnd], None], metrics: RelayMetrics) -> None:
        self._release = release  # gives the end's place in the caps back
        self._metrics = metrics
        self._ends: dict[RelayEnd, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, end: RelayEnd, now: float) -> None:
        self._ends[end] = (end.transport.get_write_buffer_size(), now)
        end.transport.close()  # the bytes still go out; connection_lost calls gone()

    def gone(self, end: RelayEnd) -> None:
        if self._ends.pop(end, None) is not None:
            self._release(end)

    def check(self, now: float, stall: float) -> None:
        """Reset the ends whose buffer has not shrunk for ``stall`` seconds."""
        for end, (size, since) in list(self._ends.items()):
            left = end.transport.get_write_buffer_size()
            if left < size:
                self._ends[end] = (left, now)
            elif now - since >= stall:
                ends = self._metrics.ends
                ends["flush_stalled"] = ends.get("flush_stalled", 0) + 1
                self.gone(end)
                reset(end.transport)

    def close_all(self) -> None:
        for end in list(self._ends):
            self.gone(end)
            reset(end.transport)

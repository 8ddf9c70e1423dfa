"""The transport the collective algorithms run over: one rank's links to its peers.

The Communicator provides one over punched TCP (lazily paired Channels, collective tag);
tests provide one over in-memory queues. Messages between two ranks arrive in the order
they were sent; nothing else is assumed.
"""

from __future__ import annotations

from typing import Any, Protocol


class Transport(Protocol):
    """Rank ``rank`` of ``size``: blocking messages to and from every other rank."""

    @property
    def rank(self) -> int: ...

    @property
    def size(self) -> int: ...

    def send(self, obj: Any, peer: int) -> None:
        """Send ``obj`` to ``peer`` (returns once it is handed over; may not wait for it)."""

    def recv(self, peer: int, out: Any = None) -> Any:
        """The next object from ``peer``; an array may land in ``out`` (same dtype and size)."""

    def exchange(self, obj: Any, peer: int, out: Any = None) -> Any:
        """Send ``obj`` to ``peer`` while receiving its object (both call it): full duplex,
        so neither waits for the other to receive first, whatever the size."""


def send_items(transport: Transport, items: list[Any], peer: int) -> None:
    """A list as its length and then each item (arrays inside stay raw buffers)."""
    transport.send(len(items), peer)
    for item in items:
        transport.send(item, peer)


def recv_items(transport: Transport, peer: int) -> list[Any]:
    """The list that ``send_items`` sent."""
    count: int = transport.recv(peer)
    return [transport.recv(peer) for _ in range(count)]

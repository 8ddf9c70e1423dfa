"""The relay's memory across sessions: ``--relay-max-buffered``.

Each session's two write buffers are bounded by backpressure (:mod:`rendezvous.relay`),
but a thousand sessions times 2 x 1 MiB is 2 GB. :class:`BufferCap` bounds the sum. It
keeps what each write buffer held when last looked at (an upper bound: buffers only
drain in between). Above the cap it holds the senders whose peer's buffer is over a
fair share (the cap over the number of directions), so one stuck receiver never stops
the others, until a poll finds that buffer below half its share or the sum below three
quarters of the cap. Ends at most their share hold at most the cap together, so the
sum stays under about twice the cap plus one read chunk per sender active at that
moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rendezvous.relay_metrics import RelayMetrics

if TYPE_CHECKING:
    from rendezvous.relay import RelayEnd, RelaySession

RECHECK = 0.01  # seconds between looks at the buffers while senders are held


class BufferCap:
    """The sum of the relay's write buffers, and the senders held while it is too big."""

    def __init__(
        self,
        limit: int,
        metrics: RelayMetrics,
        sessions: Mapping[tuple[bytes, bytes], RelaySession],
    ) -> None:
        self.limit = limit  # 0: no cap
        self.metrics = metrics
        self.sessions = sessions  # the hub's, read live
        self.total = 0  # the sum of every end's ``accounted``
        self.held: set[RelayEnd] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recheck: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def account(self, end: RelayEnd) -> None:
        size = end.transport.get_write_buffer_size()
        self.total += size - end.accounted
        end.accounted = size

    def forget(self, end: RelayEnd) -> None:
        """Its session ended: its buffer no longer counts."""
        self.total -= end.accounted
        end.accounted = 0
        self.held.discard(end)

    def fair_share(self) -> int:
        """One direction's part of the cap."""
        return self.limit // (2 * max(1, len(self.sessions)))

    def hold(self, source: RelayEnd) -> None:
        """Over the cap: stop reading this sender until its peer's buffer drains."""
        if not source.held:
            source.held = True
            self.held.add(source)
            self.metrics.held += 1
            source.transport.pause_reading()
        if self._recheck is None and self._loop is not None:
            self._recheck = self._loop.call_later(RECHECK, self._release)

    def _release(self) -> None:
        """Look at every buffer again; senders whose peer drained (or all, once the sum
        is below three quarters of the cap) go on."""
        self._recheck = None
        for session in self.sessions.values():
            self.account(session.a)
            self.account(session.b)
        low = self.total <= self.limit * 3 // 4
        half_share = self.fair_share() // 2
        for end in list(self.held):
            peer = end.peer
            if low or peer is None or peer.accounted <= half_share:
                self.held.discard(end)
                end.held = False
                if not end.blocked and not end.transport.is_closing():
                    end.transport.resume_reading()
        if self.held and self._loop is not None:
            self._recheck = self._loop.call_later(RECHECK, self._release)

    def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

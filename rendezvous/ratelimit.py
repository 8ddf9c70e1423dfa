"""WARNING floods, rate-limited per reason: a few lines per second each, then one summary.

A scanner or a flood of junk makes one refusal after another; a line for each would fill
the disk (or the pipe) with copies. :class:`LogRateLimit` lets ``burst`` lines per
``interval`` through for each key (the refusal reason); the rest are counted, and one
``suppressed`` line per key says how many when the interval is over (:meth:`summaries`,
called from the server's tick). The metrics still count every refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

BURST = 10
"""Lines per reason and interval that are logged before the rest are summarised."""

INTERVAL = 1.0
"""Seconds of one rate-limit window."""


class LogRateLimit:
    """Per-key line budgets over fixed windows, with a summary of what was held back."""

    __slots__ = ("_windows", "burst", "interval", "log", "time")

    def __init__(
        self,
        log: logging.Logger,
        time: Callable[[], float],
        burst: int = BURST,
        interval: float = INTERVAL,
    ) -> None:
        self.log = log
        self.time = time
        self.burst = burst
        self.interval = interval
        # key -> [window start, lines logged in it, lines suppressed in it]
        self._windows: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        """Whether a line for ``key`` may be logged now (False: it is counted instead)."""
        now = self.time()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            if window is not None and window[2]:
                self._summary(key, window)
            self._windows[key] = [now, 1, 0]
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False

    def summaries(self, *, final: bool = False) -> None:
        """Log the summary of every window that is over (``final``: of every window, at
        shutdown) and held lines back; forget those windows (so the table stays as small
        as the set of live reasons)."""
        now = self.time()
        for key, window in list(self._windows.items()):
            if final or now - window[0] >= self.interval:
                if window[2]:
                    self._summary(key, window)
                del self._windows[key]

    def _summary(self, key: str, window: list[float]) -> None:
        self.log.warning(
            "suppressed",
            extra={
                "event": "suppressed",
                "reason": key,
                "suppressed": int(window[2]),
                "logged": int(window[1]),
                "interval_seconds": self.interval,
            },
        )

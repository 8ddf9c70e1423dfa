"""The server's metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout.

On Fargate nothing scrapes /metrics, but the task's log stream goes to CloudWatch Logs,
and CloudWatch Logs turns every log line in EMF into metric data points. So every N
seconds we print one JSON line: counters as the increase since the previous line, gauges
as their current value. No agent, no sidecar, no AWS API call from the server.

Format (CloudWatch's EMF specification): the root object has ``_aws`` with ``Timestamp``
(milliseconds since the epoch) and ``CloudWatchMetrics`` (one directive: ``Namespace``,
``Dimensions`` as a list of dimension-name lists, ``Metrics`` as ``{"Name", "Unit"}``);
every metric and dimension named there is also a member of the root object.

The lines go to stdout through a :class:`~rendezvous.logwriter.LineWriter` thread, the
one the JSON log uses for stderr: a stdout nobody reads never blocks the event loop;
lines it cannot take are dropped and counted (``rendezvous_emf_dropped_total``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from rendezvous.logwriter import LineWriter

if TYPE_CHECKING:
    from rendezvous.metrics import Metrics

log = logging.getLogger("rendezvous")

DEFAULT_NAMESPACE = "Rendezvous"
MAX_PENDING = 256 * 1024
"""Characters of EMF lines that may wait for stdout before new lines are dropped."""
CLOSE_WAIT = 2.0
"""Seconds ``stop()`` waits for the queued lines to reach stdout at most."""
SERVICE_DIMENSION = "Service"


@dataclass(frozen=True)
class Series:
    """One CloudWatch metric: its name, its unit, and whether it is a running total."""

    name: str
    unit: str
    counter: bool


SERIES = (
    Series("Pairings", "Count", counter=True),
    Series("Requests", "Count", counter=True),
    Series("Refusals", "Count", counter=True),
    Series("Expirations", "Count", counter=True),
    Series("AbandonedWaits", "Count", counter=True),
    Series("WaitingClients", "Count", counter=False),
    Series("OpenConnections", "Count", counter=False),
    Series("ConnectionsUsed", "Percent", counter=False),
    Series("Ready", "None", counter=False),
)
WAIT = Series("PairingWaitMean", "Seconds", counter=False)
"""Mean wait of the pairings completed in the interval; absent when there were none."""

# Running totals read alongside SERIES: the wait histogram's sum and count.
_WAIT_SUM, _WAIT_COUNT = "_wait_sum", "_wait_count"


def read_metrics(metrics: Metrics) -> dict[str, float]:
    """Current values of a server's Metrics under the EMF names (totals for counters)."""
    cap = metrics.max_connections
    return {
        "Pairings": sum(metrics.pairings.values()),
        "Requests": sum(metrics.connections.values()),
        "Refusals": sum(metrics.rejected.values()),
        "Expirations": metrics.expired,
        "AbandonedWaits": metrics.abandoned,
        "WaitingClients": metrics.waiting(),
        "OpenConnections": metrics.open_connections(),
        "ConnectionsUsed": round(100 * metrics.open_connections() / cap, 3) if cap else 0.0,
        "Ready": 1 if metrics.ready() else 0,
        _WAIT_SUM: metrics.wait_sum,
        _WAIT_COUNT: sum(metrics.wait_counts),
    }


class EmfWriter:
    """Prints one EMF line every ``interval`` seconds, and a last one at ``stop()``.

    ``read`` returns the current values (``read_metrics`` of the server's Metrics);
    ``write`` receives each line without its newline; without one, lines go to ``stream``
    (stdout) through a writer thread, ``max_pending`` characters queued at most, and
    ``dropped`` counts the lines it had to drop. Lives on the server's event loop,
    independent of the server object itself.
    """

    def __init__(
        self,
        read: Callable[[], Mapping[str, float]],
        interval: float,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        service: str = "rendezvous",
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        stream: TextIO | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"the EMF interval must be positive, got {interval}")
        self.read = read
        self.interval = interval
        self.namespace = namespace
        self.service = service
        self._lines: LineWriter | None = None
        if write is None:
            self._lines = LineWriter(stream or sys.stdout, max_pending, sink="stdout", report=False)
            write = self._put_line
        self.write = write
        self.clock = clock
        self._reported_drops = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0.0
        self._previous: dict[str, float] = dict(self.read())  # counters count from here

    def document(self) -> dict[str, object]:
        """The next EMF document: counters since the previous one, gauges now."""
        current = dict(self.read())
        previous = self._previous
        root: dict[str, object] = {SERVICE_DIMENSION: self.service, "event": "emf_metrics"}
        definitions = []
        for series in SERIES:
            value = current[series.name]
            if series.counter:
                value -= previous.get(series.name, 0)
            root[series.name] = value
            definitions.append({"Name": series.name, "Unit": series.unit})
        pairings = current[_WAIT_COUNT] - previous.get(_WAIT_COUNT, 0)
        if pairings > 0:
            waited = current[_WAIT_SUM] - previous.get(_WAIT_SUM, 0)
            root[WAIT.name] = round(waited / pairings, 6)
            definitions.append({"Name": WAIT.name, "Unit": WAIT.unit})
        root["_aws"] = {
            "Timestamp": int(self.clock() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": self.namespace,
                    "Dimensions": [[SERVICE_DIMENSION]],
                    "Metrics": definitions,
                }
            ],
        }
        self._previous = current  # only once the document is whole: a failure loses nothing
        return root

    @property
    def dropped(self) -> int:
        """EMF lines dropped because stdout did not keep up (0 with a ``write`` given)."""
        return 0 if self._lines is None else self._lines.dropped

    def _put_line(self, line: str) -> None:
        assert self._lines is not None
        self._lines.put(line + "\n", 1)

    def emit(self) -> None:
        self.write(json.dumps(self.document(), separators=(",", ":")))
        dropped = self.dropped
        if dropped > self._reported_drops:  # on stderr: stdout is the one not keeping up
            log.warning(
                "EMF lines dropped",
                extra={
                    "event": "emf_dropped",
                    "dropped": dropped - self._reported_drops,
                    "detail": "stdout did not keep up; read it faster",
                },
            )
            self._reported_drops = dropped

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next = loop.time() + self.interval
        self._timer = loop.call_at(self._next, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self.emit()
        except OSError as exc:  # stdout closed: nobody will read further lines
            log.warning(
                "EMF output failed; no more EMF lines",
                extra={"event": "emf_stopped", "error": str(exc)},
            )
            self._timer = None
            return
        except Exception:  # a bad value must not end the metrics for good
            log.exception("EMF line failed", extra={"event": "emf_error"})
        # fixed steps from the start, so lines do not drift later and later
        self._next = max(self._next + self.interval, self._loop.time())
        self._timer = self._loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        """Cancel the timer and print the last interval (nothing is lost on SIGTERM)."""
        timer, self._timer = self._timer, None
        try:
            if timer is not None:
                timer.cancel()
                self.emit()
        finally:
            if self._lines is not None:  # a second stop: the thread is already gone
                self._lines.close(CLOSE_WAIT)

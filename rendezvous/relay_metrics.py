"""The relay's and the discovery port's Prometheus metrics, plain counters read when scraped.

Registered into the server's own registry next to :class:`rendezvous.metrics.Metrics`,
so ``/metrics`` shows them with the rest. Every reason is exported at 0 from the start
(Prometheus's rate() cannot see a series' first increase).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rendezvous.metrics import cumulative_buckets

RELAY_REFUSAL_REASONS = (
    "bad_credential",
    "busy",
    "disabled",
    "draining",
    "early_data",
    "name_pattern",
    "peer_timeout",
    "per_ip_cap",
    "server_full",
    "stop",
)
"""Why a relay end got no session (refused at once, or dropped while waiting)."""

RELAY_END_REASONS = (
    "abandoned",
    "bytes_limit",
    "closed",
    "drain",
    "duration_limit",
    "idle",
    "reset",
    "stop",
)
"""Why a relay session ended; ``abandoned``: a waiting end hung up before its peer came
(no session, so not in the duration histogram)."""

DURATION_BUCKETS = (0.1, 1, 10, 60, 300, 900, 3600, 14400)


class RelayMetrics:
    """Counters of the relay and the discovery port; gauges read through callables."""

    def __init__(self, max_sessions: int = 0) -> None:
        self.max_sessions = max_sessions  # the cap (--relay-max-sessions), for saturation
        self.requests = 0
        self.started = 0
        self.bytes = 0
        self.discovery = 0
        self.held = 0  # senders paused because all relay buffers were over the cap
        self.max_buffered = 0  # that cap (--relay-max-buffered), 0: none
        self.refused: dict[str, int] = dict.fromkeys(RELAY_REFUSAL_REASONS, 0)
        self.ends: dict[str, int] = dict.fromkeys(RELAY_END_REASONS, 0)
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.active: Callable[[], int] = lambda: 0
        self.waiting: Callable[[], int] = lambda: 0
        self.buffered: Callable[[], int] = lambda: 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def abandoned(self) -> None:
        self.ends["abandoned"] += 1

    def ended(self, reason: str, seconds: float) -> None:
        self.ends[reason] = self.ends.get(reason, 0) + 1
        self.duration_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "rendezvous_relay_sessions", "Relay sessions forwarding now", self.active()
        )
        yield GaugeMetricFamily(
            "rendezvous_relay_waiting", "Relay ends waiting for their peer", self.waiting()
        )
        yield GaugeMetricFamily(
            "rendezvous_relay_max_sessions",
            "The cap on relay sessions and waiting ends (--relay-max-sessions)",
            self.max_sessions,
        )
        yield GaugeMetricFamily(
            "rendezvous_relay_buffered_bytes",
            "Bytes held in relay write buffers (bounded by backpressure)",
            self.buffered(),
        )
        yield GaugeMetricFamily(
            "rendezvous_relay_max_buffered_bytes",
            "The cap on bytes in all relay write buffers (--relay-max-buffered; 0: none)",
            self.max_buffered,
        )
        yield CounterMetricFamily(
            "rendezvous_relay_held",
            "Relay senders paused because the relay's buffers were over --relay-max-buffered",
            self.held,
        )
        yield CounterMetricFamily(
            "rendezvous_relay_requests", "Relay requests received", self.requests
        )
        yield CounterMetricFamily(
            "rendezvous_relay_started", "Relay sessions started", self.started
        )
        yield CounterMetricFamily(
            "rendezvous_relay_bytes", "Bytes relayed, both directions", self.bytes
        )
        family = CounterMetricFamily(
            "rendezvous_relay_refused", "Relay ends given no session, by reason", labels=["reason"]
        )
        for reason, count in sorted(self.refused.items()):
            family.add_metric([reason], count)
        yield family
        family = CounterMetricFamily(
            "rendezvous_relay_ended", "Relay sessions ended, by reason", labels=["reason"]
        )
        for reason, count in sorted(self.ends.items()):
            family.add_metric([reason], count)
        yield family
        yield HistogramMetricFamily(
            "rendezvous_relay_session_seconds",
            "How long relay sessions lasted",
            buckets=cumulative_buckets(DURATION_BUCKETS, self.duration_counts),
            sum_value=self.duration_sum,
        )
        yield CounterMetricFamily(
            "rendezvous_discovery",
            "NAT discovery answers (discovery port and OBSERVE requests)",
            self.discovery,
        )

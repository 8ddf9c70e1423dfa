"""Prometheus metrics as plain counters, turned into metric families only when scraped.

prometheus-client's Counter.inc() and Histogram.observe() cost microseconds each, and a
pairing touches five of them; plain integers cost nanoseconds. The collector below
exposes the same names and types (``rendezvous_connections_total{protocol}`` ...) through
a per-server CollectorRegistry, so several servers can live in one process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

REFUSAL_REASONS = (
    "bad_token",
    "connection_cap",
    "delete_pairs_disabled",
    "drain",
    "empty",
    "expired",
    "forged",
    "incomplete",
    "internal_error",
    "junk",
    "malformed",
    "name_pattern",
    "no_credential",
    "not_ipv4",
    "not_utf8",
    "oversized",
    "per_ip_waiting_cap",
    "request_timeout",
    "v1_not_allowed",
    "wrong_prefix",
)
"""Every reason the server refuses for, exported at 0 from the start: Prometheus's rate()
cannot see a series' first increase, so a reason that first appears at 1 would be missed."""

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    """The server's counters; gauges are read through callables when scraped."""

    def __init__(
        self,
        waiting: Callable[[], int] = lambda: 0,
        open_connections: Callable[[], int] = lambda: 0,
        max_connections: int = 0,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.connections = {"v1": 0, "v2": 0, "command": 0}
        self.pairings = {"v1": 0, "v2": 0, "mixed": 0}
        self.rejected: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.expired = 0
        self.abandoned = 0
        self.waiting = waiting
        self.open_connections = open_connections
        self.max_connections = max_connections
        self.ready = ready
        self.wait_counts = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self.wait_sum = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def observe_wait(self, seconds: float) -> None:
        self.wait_counts[bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.wait_sum += seconds

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "rendezvous_connections",
            "Rendezvous requests by protocol (v1, v2, command)",
            labels=["protocol"],
        )
        for protocol, count in self.connections.items():
            family.add_metric([protocol], count)
        yield family
        family = CounterMetricFamily(
            "rendezvous_pairings",
            "Completed pairings by protocol (v1, v2, or mixed: one of each)",
            labels=["protocol"],
        )
        for protocol, count in self.pairings.items():
            family.add_metric([protocol], count)
        yield family
        yield GaugeMetricFamily(
            "rendezvous_waiting_clients", "Clients waiting for their peer now", self.waiting()
        )
        yield GaugeMetricFamily(
            "rendezvous_open_connections",
            "Open rendezvous connections, all states (reading, waiting)",
            self.open_connections(),
        )
        yield GaugeMetricFamily(
            "rendezvous_max_connections",
            "The connection cap (--max-connections); beyond it connections are refused",
            self.max_connections,
        )
        yield GaugeMetricFamily(
            "rendezvous_ready",
            "1 when /readyz says ready, 0 when draining or at the connection cap",
            1 if self.ready() else 0,
        )
        buckets, total = [], 0
        for bound, count in zip((*WAIT_BUCKETS, float("inf")), self.wait_counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        yield HistogramMetricFamily(
            "rendezvous_pairing_wait_seconds",
            "How long the first client of a pair waited for the second",
            buckets=buckets,
            sum_value=self.wait_sum,
        )
        family = CounterMetricFamily(
            "rendezvous_rejected",
            "Refused requests and connections by reason",
            labels=["reason"],
        )
        for reason, count in sorted(self.rejected.items()):
            family.add_metric([reason], count)
        yield family
        yield CounterMetricFamily(
            "rendezvous_expired", "Waiting entries that timed out", self.expired
        )
        yield CounterMetricFamily(
            "rendezvous_abandoned", "Waiters that hung up before pairing", self.abandoned
        )

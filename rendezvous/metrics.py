"""Prometheus metrics as plain counters, turned into metric families only when scraped.

prometheus-client's Counter.inc() and Histogram.observe() cost microseconds each, and a
pairing touches five of them; plain integers cost nanoseconds. The collector below
exposes the same names and types (``rendezvous_connections_total{protocol}`` ...) through
a per-server CollectorRegistry, so several servers can live in one process. The registry
also carries prometheus-client's standard process collector (``process_open_fds``,
``process_max_fds``, ``process_resident_memory_bytes``, ``process_cpu_seconds_total``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rendezvous.logs import dropped_lines


class TokenCounts(Protocol):
    """What the metrics read of the room's reconnect tokens."""

    @property
    def token_count(self) -> int: ...

    @property
    def tokens_dropped(self) -> dict[str, int]: ...


def _no_count() -> int:
    return 0


REFUSAL_REASONS = (
    "accept_failed",
    "bad_token",
    "connection_cap",
    "delete_pairs_disabled",
    "drain",
    "empty",
    "http_cap",
    "http_error",
    "http_evicted",
    "http_malformed",
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
    "proxy_bad_command",
    "proxy_bad_family",
    "proxy_bad_signature",
    "proxy_bad_version",
    "proxy_closed_in_header",
    "proxy_header_too_long",
    "proxy_short_addresses",
    "redis_unavailable",
    "replica_not_live",
    "request_timeout",
    "reset",
    "v1_not_allowed",
    "wrong_prefix",
)
"""Every reason the server refuses for, exported at 0 from the start: Prometheus's rate()
cannot see a series' first increase, so a reason that first appears at 1 would be missed."""

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900)


def cumulative_buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (the last one +Inf) as Prometheus's cumulative (le, count) pairs."""
    buckets, total = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets


class Metrics:
    """The server's counters; gauges are read through callables when scraped."""

    def __init__(
        self,
        waiting: Callable[[], int] = _no_count,
        room: TokenCounts | None = None,
        open_connections: Callable[[], int] = _no_count,
        max_connections: int = 0,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        # "unknown": connections that ended before showing a protocol (reset, empty,
        # refused at the cap, junk without a NUL)
        self.connections = {"v1": 0, "v2": 0, "command": 0, "unknown": 0}
        self.pairings = {"v1": 0, "v2": 0, "mixed": 0}
        self.rejected: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.expired = 0
        self.drained = 0
        self.abandoned = 0
        self.waiting = waiting
        self.open_connections = open_connections
        self.max_connections = max_connections
        self.ready = ready
        self.room = room
        self.http_open: Callable[[], int] = _no_count  # set by the HTTP side
        self.log_dropped: Callable[[], int] = dropped_lines  # this process's logging
        self.emf_dropped: Callable[[], int] = _no_count  # set by the EMF writer, if any
        self.wait_counts = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self.wait_sum = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

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
        yield HistogramMetricFamily(
            "rendezvous_pairing_wait_seconds",
            "How long the first client of a pair waited for the second",
            buckets=cumulative_buckets(WAIT_BUCKETS, self.wait_counts),
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
        yield CounterMetricFamily(
            "rendezvous_drained",
            "Waiters closed by a drain (SIGTERM), not by their timeout",
            self.drained,
        )
        yield GaugeMetricFamily(
            "rendezvous_http_connections", "Open connections to the HTTP port", self.http_open()
        )
        yield CounterMetricFamily(
            "rendezvous_log_dropped",
            "Log lines dropped because the log sink (stderr) did not keep up",
            self.log_dropped(),
        )
        yield CounterMetricFamily(
            "rendezvous_emf_dropped",
            "EMF metric lines dropped because stdout did not keep up",
            self.emf_dropped(),
        )
        if self.room is not None:
            yield GaugeMetricFamily(
                "rendezvous_reconnect_tokens",
                "v2 reconnect tokens held (waiting, or within their grace)",
                self.room.token_count,
            )
            family = CounterMetricFamily(
                "rendezvous_tokens_dropped",
                "Reconnect tokens dropped before their grace ended, by cap",
                labels=["cap"],
            )
            for cap, count in sorted(self.room.tokens_dropped.items()):
                family.add_metric([cap], count)
            yield family

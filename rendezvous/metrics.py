"""Prometheus metrics, one CollectorRegistry per server so several servers can live in
one process (tests, the embedded server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise to the scrape
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Counter(
            "rendezvous_connections",
            "Rendezvous connections by protocol",
            ["protocol"],
            registry=r,
        )
        self.pairings = Counter(
            "rendezvous_pairings",
            "Completed pairings by protocol (v1, v2, or mixed: one of each)",
            ["protocol"],
            registry=r,
        )
        self.waiting = Gauge("rendezvous_waiting_clients", "Clients waiting now", registry=r)
        self.wait_seconds = Histogram(
            "rendezvous_pairing_wait_seconds",
            "How long the first client of a pair waited",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "rendezvous_rejected",
            "Refused requests and connections by reason",
            ["reason"],
            registry=r,
        )
        self.expired = Counter("rendezvous_expired", "Waiting entries that timed out", registry=r)
        self.abandoned = Counter(
            "rendezvous_abandoned", "Waiters that hung up before pairing", registry=r
        )
        # Label children cached once: .labels() per event costs more than the pairing.
        self.connections_by = {p: self.connections.labels(p) for p in ("v1", "v2", "command")}
        self.pairings_by = {p: self.pairings.labels(p) for p in ("v1", "v2", "mixed")}
        self._rejected_by: dict[str, Counter] = {}

    def reject(self, reason: str) -> None:
        child = self._rejected_by.get(reason)
        if child is None:
            child = self._rejected_by[reason] = self.rejected.labels(reason)
        child.inc()

"""Clients -> HAProxy (round robin, PROXY v2, LOCAL health checks) -> two
`rendezvous serve --redis --proxy-protocol` processes -> one redis-server. Every client
learns its peer's own address and port (not HAProxy's), whichever replica each reached."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from tests.replicas.harness import haproxy
from tests.replicas.servers import Client, replica_processes


@pytest.mark.timeout(180)
def test_pairs_through_haproxy_report_each_clients_real_endpoint(redis_server, tmp_path):
    with contextlib.ExitStack() as stack:
        group = replica_processes(tmp_path, redis_server.url, 2, "--proxy-protocol")
        replicas = stack.enter_context(group)
        port = stack.enter_context(haproxy(tmp_path, *(r.port for r in replicas)))
        kinds = [("v1", "v1"), ("v2", "v2"), ("v1", "v2"), ("v2", "v1")] * 2
        for i, (first, second) in enumerate(kinds):
            name = f"haproxy-{uuid.uuid4().hex[:8]}-{i}"
            waiter = Client(port, name, first)
            waiter.waiting()  # its own endpoint (v1) or WAITING, as the server saw it
            newcomer = Client(port, name, second)
            assert newcomer.paired(newcomer=True) == waiter.me
            assert waiter.paired(newcomer=False) == newcomer.me
            waiter.close()
            newcomer.close()
        time.sleep(0.5)  # a few more of HAProxy's health checks (every 200 ms)
        paired = [
            (replica.name, record)
            for replica in replicas
            for record in replica.records()
            if record.get("event") == "paired"
        ]
        assert len(paired) == len(kinds)
        # round robin: some pairs had their sides on different replicas
        assert any(record["waiter_replica"] != home for home, record in paired)
        for replica in replicas:
            # health checks (LOCAL) are neither refusals nor requests
            assert replica.metric('rendezvous_rejected_total{reason="proxy_bad_signature"}') == 0
            closed = 'rendezvous_rejected_total{reason="proxy_closed_in_header"}'
            assert replica.metric(closed) == 0
            # (the harness's "is HAProxy up" probe is one forwarded empty connection)
            assert replica.metric('rendezvous_rejected_total{reason="empty"}') <= 1
            # a client that bypasses the balancer is refused at its first byte
            direct = Client(replica.port, "direct", "v2")
            assert direct.closed()
            direct.close()
        for replica in replicas:
            deadline = time.monotonic() + 5
            while replica.metric('rendezvous_rejected_total{reason="proxy_bad_signature"}') != 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)

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


@pytest.mark.timeout(180)
def test_relayed_links_through_haproxy_meet_on_one_replica(redis_server, tmp_path):
    """Round robin puts a link's two ends on different replicas: the later end is
    forwarded to the first end's replica, with a PROXY v2 header of its own (the owner
    refuses connections without one)."""
    import threading

    from fmi_client.relay import relay_connect

    with contextlib.ExitStack() as stack:
        args = ("--proxy-protocol", "--relay-advertise", "127.0.0.1")
        replicas = stack.enter_context(replica_processes(tmp_path, redis_server.url, 2, *args))
        port = stack.enter_context(haproxy(tmp_path, *(r.port for r in replicas)))
        for i in range(4):
            name = f"relay-{uuid.uuid4().hex[:8]}-{i}"
            ends: dict[str, object] = {}
            first = threading.Thread(
                target=lambda n=name, e=ends: e.setdefault(
                    "a", relay_connect(n, "127.0.0.1", port, time.monotonic() + 20)
                )
            )
            first.start()
            time.sleep(0.2)
            sock_b = relay_connect(name, "127.0.0.1", port, time.monotonic() + 20)
            first.join(20)
            sock_a = ends["a"]
            sock_a.sendall(b"ping %d" % i)
            assert sock_b.recv(100) == b"ping %d" % i
            sock_b.sendall(b"pong")
            assert sock_a.recv(100) == b"pong"
            sock_a.close()
            sock_b.close()
        forwarded = sum(r.metric("rendezvous_relay_forwarded_total") for r in replicas)
        assert forwarded >= 1
        for replica in replicas:
            assert replica.metric('rendezvous_rejected_total{reason="proxy_bad_signature"}') == 0

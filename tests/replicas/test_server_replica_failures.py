"""Replica processes when things break: a replica SIGKILLed while clients wait on it (its
waiters are never handed out, the others keep pairing); Redis restarted (every replica
says 503 on /readyz and refuses with redis_unavailable, then recovers by itself)."""

from __future__ import annotations

import time
import uuid

import pytest

from tcpunch import Status
from testbed.redis_server import RedisServer
from tests.replicas.conftest import have_redis_server
from tests.replicas.servers import Client, replica_processes


def _name() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


@pytest.mark.timeout(120)
def test_a_killed_replicas_waiters_are_never_handed_out(redis_server, tmp_path):
    with replica_processes(tmp_path, redis_server.url, 3) as (r0, r1, r2):
        names = [_name() for _ in range(6)]
        doomed = [Client(r2.port, n, "v2" if i % 2 else "v1") for i, n in enumerate(names)]
        for client in doomed:
            client.waiting()
        r2.kill()  # SIGKILL: no retirement, its notice subscription drops with it
        for client in doomed:
            assert client.closed()
        newcomers = []
        for i, name in enumerate(names):
            newcomer = Client((r0, r1)[i % 2].port, name, "v2")
            # never PAIRED with the dead replica's waiter: it waits in its place
            assert newcomer.waiting()
            newcomers.append(newcomer)
        for i, (name, newcomer) in enumerate(zip(names, newcomers, strict=True)):
            third = Client((r1, r0)[i % 2].port, name, "v1")
            assert third.paired(newcomer=True) == newcomer.me
            assert newcomer.paired(newcomer=False) == third.me
            third.close()
            newcomer.close()
        for client in doomed:
            client.close()
        # the survivors keep pairing across each other
        name = _name()
        a = Client(r0.port, name, "v2")
        a.waiting()
        b = Client(r1.port, name, "v2")
        assert b.paired(newcomer=True) == a.me
        assert a.paired(newcomer=False) == b.me
        a.close()
        b.close()
        assert r0.readyz() == 200 and r1.readyz() == 200


@pytest.mark.timeout(180)
def test_replicas_report_a_redis_restart_and_recover(tmp_path):
    have_redis_server()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with replica_processes(tmp_path, redis.url, 2) as (r0, r1):
            waiter = Client(r0.port, _name(), "v2")
            waiter.waiting()
            redis.stop()
            for replica in (r0, r1):
                replica.wait_ready(False, timeout=15)
                assert replica.metric("rendezvous_redis_ready") == 0
                assert replica.health()["status"] == "unavailable"
            # Lost: the waiter is told ERROR (it may resume with its token)
            assert waiter.v2().status is Status.ERROR
            assert waiter.closed()
            refused = Client(r1.port, _name(), "v2")
            assert refused.v2().status is Status.ERROR
            assert refused.closed()
            v1 = Client(r0.port, _name(), "v1")
            assert v1.closed()  # v1: closed without an answer
            for client in (waiter, refused, v1):
                client.close()
            redis.start()
            for replica in (r0, r1):
                replica.wait_ready(True, timeout=30)
                assert replica.metric("rendezvous_redis_ready") == 1
                assert replica.health()["status"] == "ok"
            assert r1.metric('rendezvous_rejected_total{reason="redis_unavailable"}') >= 1
            name = _name()
            a = Client(r0.port, name, "v1")
            a.waiting()
            b = Client(r1.port, name, "v2")
            assert b.paired(newcomer=True) == a.me
            assert a.paired(newcomer=False) == b.me
            a.close()
            b.close()
    finally:
        if redis.proc is not None:
            redis.stop()


@pytest.mark.timeout(60)
def test_drain_retires_the_replica_and_keeps_the_token(redis_server, tmp_path):
    """SIGTERM: the waiter gets TIMEOUT with its token, which resumes on another replica."""
    with replica_processes(tmp_path, redis_server.url, 2) as (r0, r1):
        name = _name()
        waiter = Client(r0.port, name, "v2")
        token = waiter.waiting()
        started = time.monotonic()
        r0.stop()
        response = waiter.v2()
        assert response.status is Status.TIMEOUT and response.token == token
        assert time.monotonic() - started < 15
        waiter.close()
        again = Client(r1.port, name, "v2", token=token)
        assert again.waiting() == token
        peer = Client(r1.port, name, "v2")
        assert peer.paired(newcomer=True) == again.me
        again.close()
        peer.close()


@pytest.mark.timeout(120)
def test_a_relay_owned_by_a_killed_replica_is_refused_then_taken_over(redis_server, tmp_path):
    import threading

    from fmi_client.relay import RelayRefused, relay_connect
    from tcpunch.relay import RelayRefusal

    args = ("--relay-advertise", "127.0.0.1")
    with replica_processes(tmp_path, redis_server.url, 3, *args) as (r0, r1, r2):
        name = _name()
        failures: list[Exception] = []

        def first_end() -> None:
            try:
                relay_connect(name, "127.0.0.1", r2.port, time.monotonic() + 20)
            except Exception as exc:  # the owner dies under it
                failures.append(exc)

        waiting = threading.Thread(target=first_end)
        waiting.start()
        time.sleep(0.5)  # r2 owns the session now
        r2.kill()
        waiting.join(20)
        assert failures  # its end was cut off with its replica
        with pytest.raises(RelayRefused) as info:
            relay_connect(name, "127.0.0.1", r0.port, time.monotonic() + 10)
        assert info.value.reason is RelayRefusal.DRAINING  # the owner is unreachable
        assert r0.metric("rendezvous_relay_forward_failed_total") == 1
        # both ends retry (the same session id): a live replica takes the session over
        ends: dict[str, object] = {}
        retry = threading.Thread(
            target=lambda: ends.setdefault(
                "a", relay_connect(name, "127.0.0.1", r0.port, time.monotonic() + 20)
            )
        )
        retry.start()
        time.sleep(0.3)
        sock_b = relay_connect(name, "127.0.0.1", r1.port, time.monotonic() + 20)
        retry.join(20)
        sock_a = ends["a"]
        sock_b.sendall(b"over the new owner")
        assert sock_a.recv(100) == b"over the new owner"
        sock_a.close()
        sock_b.close()

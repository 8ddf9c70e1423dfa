"""Three `rendezvous serve --redis` processes and one redis-server behave as one server:
pairs whose sides reach different replicas pair (v1, v2, mixed), a token resumes on
another replica, a resumed token closes its older connection elsewhere, and the fork's
commands reach waiters on any replica."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpunch import NatClass, Status, hint_flags
from tests.replicas.servers import Client, ReplicaProcess, replica_processes


@pytest.fixture(scope="module")
def replicas(redis_server, tmp_path_factory) -> Iterator[list[ReplicaProcess]]:
    workdir: Path = tmp_path_factory.mktemp("replicas")
    with replica_processes(workdir, redis_server.url, 3, "--allow-delete-pairs") as group:
        yield group


def _name() -> str:
    return f"pair-{uuid.uuid4().hex[:10]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("first", "second"), [("v1", "v1"), ("v2", "v2"), ("v1", "v2"), ("v2", "v1")]
)
def test_sides_on_different_replicas_pair(replicas, first, second):
    for a_replica, b_replica in itertools.permutations(replicas, 2):
        name = _name()
        waiter = Client(a_replica.port, name, first)
        waiter.waiting()
        newcomer = Client(b_replica.port, name, second)
        assert newcomer.paired(newcomer=True) == waiter.me
        assert waiter.paired(newcomer=False) == newcomer.me  # its replica heard the peer
        assert waiter.closed() and newcomer.closed()
        waiter.close()
        newcomer.close()


@pytest.mark.timeout(60)
def test_a_token_resumes_on_another_replica(replicas):
    r0, r1, r2 = replicas
    name = _name()
    first = Client(r0.port, name, "v2")
    token = first.waiting()
    first.close()  # hung up: its token stays valid for the grace
    again = Client(r1.port, name, "v2", token=token)
    assert again.waiting() == token
    peer = Client(r2.port, name, "v1")
    assert peer.paired(newcomer=True) == again.me
    response = again.v2()
    assert response.status is Status.PAIRED and response.peer == peer.me
    assert response.token == token
    again.close()
    peer.close()


@pytest.mark.timeout(60)
def test_a_resumed_token_closes_its_older_connection_on_another_replica(replicas):
    r0, r1, r2 = replicas
    name = _name()
    older = Client(r0.port, name, "v2")
    token = older.waiting()
    newer = Client(r1.port, name, "v2", token=token)
    assert newer.waiting() == token
    assert older.closed()  # Displaced on r0: closed without an answer
    peer = Client(r2.port, name, "v2")
    assert peer.paired(newcomer=True) == newer.me
    assert newer.paired(newcomer=False) == peer.me
    for client in (older, newer, peer):
        client.close()


@pytest.mark.timeout(60)
def test_nat_hints_cross_replicas_and_survive_a_resume(replicas):
    """Each side's NAT class reaches its peer on another replica, in both directions
    (the waiter's via its Redis entry, the newcomer's via the notice), also after a
    token resume on a third replica; a v1 peer counts as unknown."""
    r0, r1, r2 = replicas
    name = _name()
    first = Client(r0.port, name, "v2", flags=hint_flags(NatClass.ENDPOINT_INDEPENDENT))
    token = first.waiting()
    first.close()
    again = Client(r1.port, name, "v2", token, flags=hint_flags(NatClass.PORT_DEPENDENT))
    assert again.waiting() == token
    peer = Client(r2.port, name, "v2", flags=hint_flags(NatClass.NO_INBOUND))
    assert peer.paired_v2().peer_nat is NatClass.PORT_DEPENDENT
    assert again.paired_v2().peer_nat is NatClass.NO_INBOUND
    for client in (again, peer):
        client.close()
    name = _name()
    old = Client(r0.port, name, "v1")
    old.waiting()
    hinted = Client(r1.port, name, "v2", flags=hint_flags(NatClass.PORT_DEPENDENT))
    response = hinted.paired_v2()
    assert response.peer == old.me and response.peer_nat is NatClass.UNKNOWN
    assert old.paired(newcomer=False) == hinted.me
    plain = Client(r2.port, name, "v2")  # flags 0: byte 50 stays zero
    plain.waiting()
    late = Client(r0.port, name, "v2", flags=hint_flags(NatClass.NO_INBOUND))
    assert late.paired_v2().peer_nat is NatClass.UNKNOWN
    assert plain.paired_v2().peer_nat is None
    for client in (old, hinted, plain, late):
        client.close()


@pytest.mark.timeout(60)
def test_remove_pair_reaches_a_waiter_on_another_replica(replicas):
    r0, r1, _ = replicas
    name = _name()
    waiter = Client(r0.port, name, "v2")
    waiter.waiting()
    command = Client(r1.port, "remove_pair_" + name, "v1")
    assert command.closed()
    response = waiter.v2()  # Removed on r0: ERROR, then closed
    assert response.status is Status.ERROR
    assert waiter.closed()
    later = Client(r1.port, name, "v2")
    later.waiting()  # the name is free again: it waits instead of pairing
    for client in (waiter, command, later):
        client.close()


def test_the_listening_line_names_redis_without_its_password(redis_server, tmp_path):
    url = redis_server.url.replace("redis://", "redis://:s3cret-pw@")
    replica = ReplicaProcess(tmp_path, "pw", url)
    try:
        text = replica.log_path.read_text()
        listening = next(r for r in replica.records() if r.get("event") == "listening")
        assert listening["redis"] == f"redis://***@127.0.0.1:{redis_server.port}/0"
        assert listening["replica_id"] == "pw"
        assert "s3cret-pw" not in text
    finally:
        replica.stop()
    assert "s3cret-pw" not in replica.log_path.read_text()


@pytest.mark.timeout(120)
def test_a_relayed_link_whose_ends_reached_different_replicas_works(redis_server, tmp_path):
    import threading
    import time

    from fmi_client.relay import relay_connect

    args = ("--relay-advertise", "127.0.0.1")
    with replica_processes(tmp_path, redis_server.url, 3, *args) as (r0, r1, r2):
        for first, second in ((r0, r1), (r2, r0)):
            name = _name()
            ends: dict[str, object] = {}

            def connect(key: str, port: int, name: str = name, ends: dict = ends) -> None:
                ends[key] = relay_connect(name, "127.0.0.1", port, time.monotonic() + 20)

            a = threading.Thread(target=connect, args=("a", first.port))
            a.start()
            time.sleep(0.3)  # the first end reaches its replica first: that one owns it
            connect("b", second.port)
            a.join(20)
            sock_a, sock_b = ends["a"], ends["b"]
            payload = bytes(range(256)) * 4096  # 1 MiB each way
            sender = threading.Thread(target=sock_a.sendall, args=(payload,))
            sender.start()
            got = b""
            while len(got) < len(payload):
                got += sock_b.recv(1 << 16)
            sender.join(20)
            assert got == payload
            sock_b.sendall(b"and back")
            assert sock_a.recv(100) == b"and back"
            sock_a.close()
            sock_b.close()
            forward = second.wait_for_record("relay_forward", name)
            assert forward["owner"] == f"127.0.0.1:{first.port}"
            # the session ran on the owner, the first end's replica
            assert first.wait_for_record("relay_start", name)
        assert r0.metric("rendezvous_relay_forwarded_total") == 1
        assert r1.metric("rendezvous_relay_forwarded_total") == 1


@pytest.mark.timeout(120)
def test_with_auth_a_relay_end_is_checked_before_it_is_forwarded(redis_server, tmp_path):
    import threading
    import time

    from fmi_client.relay import RelayRefused, relay_connect
    from tcpunch.credential import mint
    from tcpunch.relay import RelayRefusal

    secret = b"replica-auth-secret-0123456789"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    args = ("--relay-advertise", "127.0.0.1", "--auth-secret-file", str(tmp_path / "secret"))
    with replica_processes(tmp_path, redis_server.url, 2, *args) as (r0, r1):
        credential = mint(secret, "job-1/", 600, time.time()).encode()
        name = "job-1/" + _name()
        ends: dict[str, object] = {}
        first = threading.Thread(
            target=lambda: ends.setdefault(
                "a",
                relay_connect(name, "127.0.0.1", r0.port, time.monotonic() + 20, credential),
            )
        )
        first.start()
        time.sleep(0.3)
        forged = mint(b"another-secret-0123456789", "job-1/", 600, time.time()).encode()
        with pytest.raises(RelayRefused) as info:
            relay_connect(name, "127.0.0.1", r1.port, time.monotonic() + 10, forged)
        assert info.value.reason is RelayRefusal.BAD_CREDENTIAL
        assert r1.metric("rendezvous_relay_forwarded_total") == 0  # refused where it came
        sock_b = relay_connect(name, "127.0.0.1", r1.port, time.monotonic() + 20, credential)
        first.join(20)
        sock_b.sendall(b"authorised")
        assert ends["a"].recv(100) == b"authorised"
        assert r1.metric("rendezvous_relay_forwarded_total") == 1
        ends["a"].close()
        sock_b.close()


@pytest.mark.timeout(120)
def test_forwarded_ends_and_local_ones_share_the_relay_cap(redis_server, tmp_path):
    """A forwarded end holds 2 descriptors, as a session: it counts against the replica's
    --relay-max-sessions (and so its descriptor budget) with the ends waiting there."""
    import threading
    import time

    from fmi_client.relay import RelayRefused, relay_connect
    from tcpunch.relay import RelayRefusal

    def attempt(name: str, port: int, seconds: float) -> object:
        try:
            return relay_connect(name, "127.0.0.1", port, time.monotonic() + seconds)
        except RelayRefused as exc:
            return exc

    args = ("--relay-advertise", "127.0.0.1", "--relay-max-sessions", "1")
    with replica_processes(tmp_path, redis_server.url, 2, *args) as (r0, r1):
        owned_by_r0, owned_by_r1 = _name(), _name()
        results: dict[str, object] = {}
        waiters = [
            threading.Thread(
                target=lambda k=key, n=name, p=port: results.setdefault(k, attempt(n, p, 4))
            )
            for key, name, port in (("a", owned_by_r0, r0.port), ("x", owned_by_r1, r1.port))
        ]
        for thread in waiters:
            thread.start()
        time.sleep(0.5)  # both wait: r0 owns the first name, r1 (now full) the second
        refused = attempt(owned_by_r0, r1.port, 4)  # would be forwarded to r0
        for thread in waiters:
            thread.join(20)
        assert isinstance(refused, RelayRefused), refused
        assert refused.reason is RelayRefusal.SERVER_FULL
        assert r1.metric("rendezvous_relay_forwarded_total") == 0
        for value in results.values():
            if not isinstance(value, RelayRefused):
                value.close()


@pytest.mark.timeout(120)
def test_a_forwarded_end_whose_client_stops_reading_is_closed_when_idle(redis_server, tmp_path):
    """End b reaches r1 and is forwarded to r0 (the owner); b stops reading while a floods
    until every buffer is full. The owner ends its idle session, but r1's link has its
    upstream paused and would never see that: r1 aborts it after --relay-idle-timeout
    (a relay_forward_end line; a plain close would wait to flush to a reader that does
    not read) and b gets a reset."""
    import socket
    import threading
    import time

    from fmi_client.relay import relay_connect

    args = ("--relay-advertise", "127.0.0.1", "--relay-idle-timeout", "1")
    with replica_processes(tmp_path, redis_server.url, 2, *args) as (r0, r1):
        name = _name()
        ends: dict[str, socket.socket] = {}

        def connect(key: str, port: int) -> None:
            ends[key] = relay_connect(name, "127.0.0.1", port, time.monotonic() + 20)

        a = threading.Thread(target=connect, args=("a", r0.port))
        a.start()
        time.sleep(0.3)  # a reaches r0 first: r0 owns the session
        connect("b", r1.port)
        a.join(20)
        sock_a, sock_b = ends["a"], ends["b"]
        sock_b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock_a.settimeout(0.5)
        block = b"x" * 65536
        with contextlib.suppress(OSError):  # until every buffer on the way is full
            for _ in range(4096):  # bounded: 256 MiB at most
                sock_a.sendall(block)
        assert r1.wait_for_record("relay_forward", name)
        end = r1.wait_for_record("relay_forward_end", name, timeout=15)
        assert end["reason"] == "idle" and end["bytes"] > 0, end
        sock_b.settimeout(10)
        with pytest.raises(ConnectionResetError):  # at once: nothing waits to be flushed
            while sock_b.recv(1 << 20):  # what our own buffer held, then the reset
                pass
        sock_a.close()
        sock_b.close()

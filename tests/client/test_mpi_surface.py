"""The mpi4py surface of the Communicator over real punched sockets and a real rendezvous
server; the ranks of a world are threads of this process (fast), one world size per test.

Any source/any tag with Status, sendrecv, isend/irecv Requests, Split with collectives
inside every color, the buffer calls against numpy, and wrong use raising at the caller.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fmi_client import (
    ANY_SOURCE,
    ANY_TAG,
    IN_PLACE,
    MAXLOC,
    UNDEFINED,
    Communicator,
    Request,
    Status,
)
from fmi_client.ops import MAX, SUM, Op
from tests.client.ranks import run_ranks

WORLD_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
_names = itertools.count()


def run_comms(server: Any, n: int, body: Callable[[Communicator], Any]) -> list[Any]:
    """``body(comm)`` on every rank of a fresh world (threads); results in rank order."""
    name = f"surface-{os.getpid()}-{next(_names)}"
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            with Communicator(rank, n, server.address, name, timeout=20, op_timeout=20) as c:
                results[rank] = body(c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a rank did not finish"
    firsts = [e for e in errors if type(e).__name__ != "PeerLost"] or errors
    if firsts:
        raise firsts[0]
    return results


def data(rank: int, size: int = 6) -> np.ndarray:
    return (np.arange(size, dtype=np.float64) * (rank + 1)) % 7


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_object_calls(server: Any, n: int) -> None:
    def body(c: Communicator) -> dict:
        r, out = c.rank, {}
        # everyone sends rank 0 two messages; rank 0 takes them from ANY_SOURCE
        c.send(("hello", r), 0, tag=3)
        c.send(r * 10, 0, tag=4)
        if r == 0:
            got = []
            for _ in range(2 * n):
                status = Status()
                obj = c.recv(ANY_SOURCE, ANY_TAG, status)
                got.append((status.Get_source(), status.Get_tag(), obj))
            out["any"] = sorted(got, key=repr)
        c.barrier()  # nobody sends rank 0 more before it took these (ANY_TAG matches all)
        right, left = (r + 1) % n, (r - 1) % n
        big = data(r, 300_000)  # 2.4 MB both ways at once: must not deadlock
        got = c.sendrecv(big, right, 5, left, 5)
        out["ring"] = np.array_equal(got, data(left, 300_000))
        reqs = [c.irecv(left, 6), c.isend(big, right, 6), c.isend({"r": r}, right, 7)]
        reqs.append(c.irecv(left, 7))
        out["waitall"] = Request.waitall(reqs)
        pending = c.irecv(ANY_SOURCE, 8)
        first = pending.test()  # nothing sent with tag 8 yet: must not wait
        c.barrier()
        c.send(r, right, 8)
        status = Status()
        while not (done := pending.test(status))[0]:
            pass
        out["test"] = (first, done[1], status.source)
        out["alltoall"] = c.alltoall([(r, j) for j in range(n)])
        out["exscan"] = c.exscan(r + 1)
        out["rs"] = c.reduce_scatter([r * n + j for j in range(n)], op=SUM)
        out["maxloc"] = c.allreduce(((r * 5) % n, r), MAXLOC)
        return out

    results = run_comms(server, n, body)
    expect = sorted(
        [(s, 3, ("hello", s)) for s in range(n)] + [(s, 4, s * 10) for s in range(n)], key=repr
    )
    assert results[0]["any"] == expect
    for r, out in enumerate(results):
        left = (r - 1) % n
        assert out["ring"]
        assert np.array_equal(out["waitall"][0], data(left, 300_000))
        assert out["waitall"][1:] == [None, None, {"r": left}]
        assert out["test"] == ((False, None), left, left)
        assert out["alltoall"] == [(s, r) for s in range(n)]
        assert out["exscan"] == (None if r == 0 else sum(s + 1 for s in range(r)))
        assert out["rs"] == sum(s * n + r for s in range(n))
        best = max((s * 5) % n for s in range(n))
        assert out["maxloc"] == (best, min(s for s in range(n) if (s * 5) % n == best))


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_buffer_calls(server: Any, n: int) -> None:
    count = 4

    def body(c: Communicator) -> dict:
        r, out = c.rank, {}
        for root in range(n):
            buf = data(root, count) if r == root else np.empty(count)
            c.Bcast(buf, root)
            out[f"bcast{root}"] = buf.copy()
            recv = np.empty(count) if r == root else None
            c.Reduce(data(r, count), recv, op=MAX, root=root)
            if r == root:
                out[f"reduce{root}"] = recv
        summed = np.empty(count)
        c.Allreduce(data(r, count), summed)
        inplace = data(r, 70_000)  # large: the reduce-scatter + allgather path
        c.Allreduce(IN_PLACE, inplace, op=SUM)
        gathered = np.empty(n * count)
        c.Allgather([data(r, count), "MPI.DOUBLE"], gathered)
        swapped = np.empty(n * count)
        c.Alltoall(data(r, n * count), swapped)
        rs = np.empty(count)
        c.Reduce_scatter(data(r, n * count), rs, op=Op.create(np.add, commute=True))
        right, left = (r + 1) % n, (r - 1) % n
        got = np.empty(count)
        c.Sendrecv(data(r, count), right, 1, got, left, 1)
        c.Send(data(r, count) * 2, right, 2)
        status = Status()
        again = np.empty(count)
        c.Recv(again, ANY_SOURCE, 2, status)
        out.update(sum=summed, inplace=inplace, gathered=gathered, swapped=swapped, rs=rs)
        out.update(sendrecv=got, recv=again, source=status.source)
        return out

    results = run_comms(server, n, body)
    for r, out in enumerate(results):
        left = (r - 1) % n
        for root in range(n):
            np.testing.assert_array_equal(out[f"bcast{root}"], data(root, count))
        every = [data(s, count) for s in range(n)]
        np.testing.assert_array_equal(out[f"reduce{r}"], functools.reduce(np.maximum, every))
        np.testing.assert_allclose(out["sum"], sum(every))
        np.testing.assert_allclose(out["inplace"], sum(data(s, 70_000) for s in range(n)))
        np.testing.assert_array_equal(out["gathered"], np.concatenate(every))
        blocks = [data(s, n * count)[r * count : (r + 1) * count] for s in range(n)]
        np.testing.assert_array_equal(out["swapped"], np.concatenate(blocks))
        np.testing.assert_allclose(out["rs"], functools.reduce(np.add, blocks))
        np.testing.assert_array_equal(out["sendrecv"], data(left, count))
        np.testing.assert_array_equal(out["recv"], data(left, count) * 2)
        assert out["source"] == left


@pytest.mark.parametrize("n", [1, 2, 5, 9, 11])
def test_split_into_colors(server: Any, n: int) -> None:
    def body(c: Communicator) -> tuple:
        color = UNDEFINED if c.rank == n - 1 and n > 2 else c.rank % 3
        sub = c.Split(color, key=-c.rank)  # reversed order inside each color
        if sub is None:
            return (None, None, None)
        with sub:
            twice = sub.Split(0, 0)  # a split of a split: names must not collide
            assert twice is not None
            with twice:
                return (sub.rank, sub.allgather(c.rank), twice.allreduce(c.rank))

    results = run_comms(server, n, body)
    for r, (new_rank, members, total) in enumerate(results):
        if r == n - 1 and n > 2:
            assert new_rank is None
            continue
        expect = sorted(
            (s for s in range(n) if s % 3 == r % 3 and not (s == n - 1 and n > 2)), reverse=True
        )
        assert members == expect
        assert members[new_rank] == r
        assert total == sum(expect)


def test_large_isends_both_ways_do_not_deadlock(server: Any) -> None:
    """Arrays far beyond the socket buffers, every rank sending while its peer sends."""

    def body(c: Communicator) -> bool:
        right, left = (c.rank + 1) % c.size, (c.rank - 1) % c.size
        big = data(c.rank, 4_000_000)  # 32 MB
        reqs = [c.isend(big, right, 1), c.irecv(left, 1)]
        got = Request.waitall(reqs)[1]
        swapped = c.sendrecv(big, left, 2, right, 2)
        return bool(np.array_equal(got, data(left, 4_000_000))) and bool(
            np.array_equal(swapped, data(right, 4_000_000))
        )

    assert run_comms(server, 3, body) == [True, True, True]


def test_wrong_use_raises_at_the_caller(server: Any) -> None:
    def body(c: Communicator) -> list[str]:
        errors = []
        for call in (
            lambda: c.send(1, 5),
            lambda: c.send(1, 1, tag=-3),
            lambda: c.recv(7),
            lambda: c.recv(1, tag=-5),
            lambda: c.isend(b"x", -4),
            lambda: c.Allreduce(np.zeros(3), np.zeros(4)),
            lambda: c.Allreduce(np.zeros(3), np.zeros(3, dtype=np.float32)),
            lambda: c.Allgather(np.zeros(3), np.zeros(5)),
            lambda: c.Alltoall(np.zeros(3), np.zeros(3)),
            lambda: c.Bcast(np.zeros(3)[::2]),
            lambda: c.Bcast([1, 2, 3]),
            lambda: c.Reduce_scatter(np.zeros(4), np.zeros(2), [1, 3]),
            lambda: c.alltoall([1]),
            lambda: c.Split(-2),
            lambda: c.reduce_scatter([1, 2, 3]),
        ):
            with pytest.raises((ValueError, TypeError)) as info:
                call()
            errors.append(str(info.value))
        c.barrier()  # nothing above broke the communicator
        return errors

    messages = run_comms(server, 2, body)[0]
    assert "dest must be a rank in 0..1" in messages[0]
    assert "tag must be >= 0" in messages[1]
    assert "ANY_SOURCE" in messages[2] and "ANY_TAG" in messages[3]
    assert "recvbuf holds 4 x float64 but needs 3 x float64" in messages[5]
    assert "float32" in messages[6]
    assert "C-contiguous" in messages[9] and "numpy array" in messages[10]
    assert "do not split into 2 blocks" in messages[8]


def test_a_peer_with_a_different_buffer_size_fails_both_ranks_not_hangs(server: Any) -> None:
    def body(c: Communicator) -> str:
        try:
            c.Bcast(np.zeros(4 if c.rank == 0 else 6))
        except Exception as exc:
            return type(exc).__name__ + ": " + str(exc)
        return "no error"

    got = run_comms(server, 3, body)
    assert got[0] == "no error" or "PeerLost" in got[0]
    assert any("Bcast: rank 0 sent 4 x float64" in g for g in got[1:]), got


@pytest.mark.parametrize("world_size", [3, 5])
def test_the_surface_across_processes(server: Any, world_size: int) -> None:
    """A few sizes only (each spawns its ranks); the threads above cover 1-9 and 11."""
    comm_name = f"surface-procs-{os.getpid()}-{world_size}"
    results = run_ranks(
        lambda rank: [
            "-m",
            "tests.client.surface_worker",
            server.host,
            str(server.port),
            str(rank),
            str(world_size),
            comm_name,
        ],
        world_size,
        timeout=180,
    )
    failures = [f"rank {r.rank}: {r.stderr[-1500:]}" for r in results if r.returncode]
    assert not failures, "\n".join(failures)
    reports = [r.json() for r in results]
    # 14 checks everywhere, 1 per root (Bcast) and 1 as root (Reduce), n + 1 more on rank 0
    n = world_size
    expected = [15 + n + (n + 1 if r == 0 else 0) for r in range(n)]
    assert [rep["checks"] for rep in reports] == expected, reports


def test_split_pairing_names_never_collide_with_the_parents_or_each_other() -> None:
    """A world of one splits without any traffic: the names are visible offline."""
    names: set[str] = set()
    with Communicator(0, 1, "127.0.0.1:1", "job") as parent:
        children = [parent.Split(color) for color in (0, 1, 0, 12)]
        grandchild = children[0].Split(1) if children[0] else None
        comms = [parent, *children, grandchild]
        for comm in comms:
            assert comm is not None
            name = comm.pairing_name(0, 1)
            assert name not in names, name
            names.add(name)
            assert name.rsplit("#", 1)[1] == "0-1"
        assert children[0].comm_name == "job#s1c0" and children[3].comm_name == "job#s4c12"
        assert grandchild is not None and grandchild.comm_name == "job#s1c0#s1c1"
        for comm in comms[1:]:
            assert comm is not None
            comm.close()


def test_out_only_receives_the_frame_asked_for() -> None:
    """A frame read past on the way to the one asked for is queued in its own array,
    never in the caller's ``out`` (which then holds the right message)."""
    import socket

    from fmi_client.channel import Channel

    a, b = socket.socketpair()
    sender, receiver = Channel(a, 0, 1), Channel(b, 1, 0)
    try:
        sender.send(np.full(4, 3.0), 3)
        sender.send(np.full(4, -1.0), -1)  # a collective's frame
        sender.send(np.full(4, 5.0), 5)
        out = np.zeros(4)
        got = receiver.recv(5, out)
        assert got is out and np.all(out == 5.0)
        assert np.all(receiver.recv(3) == 3.0) and np.all(receiver.recv(-1) == -1.0)
        sender.send(np.full(4, -1.0), -1)
        sender.send(np.full(4, 7.0), 7)
        tag, got = receiver.recv_tagged(ANY_TAG, out)  # any user tag: skips the collective's
        assert tag == 7 and got is out and np.all(out == 7.0)
        assert np.all(receiver.recv(-1) == -1.0)
    finally:
        sender.close()
        receiver.close()


def test_any_tag_recv_keeps_order_and_reports_a_closed_peer(server: Any) -> None:
    """recv() with mpi4py's defaults from a known rank: frames that arrive together come
    out one by one in order, an array after bytes, and a peer that left raises PeerLost."""
    from fmi_client import PeerLost

    def body(c: Communicator) -> list[Any]:
        if c.rank == 1:
            c.send(b"a", 0)  # pairs
            c.barrier()
            for item in (b"b", b"c", np.arange(3), b"d"):
                c.send(item, 0, tag=4)
            return []
        got = [c.recv(1)]
        c.barrier()
        got += [c.recv(1) for _ in range(4)]
        while True:  # rank 1 leaves now; its close arrives as EOF
            try:
                c.recv(1)
            except PeerLost as exc:
                got.append(type(exc).__name__)
                return got

    got = run_comms(server, 2, body)[0]
    assert got[:3] == [b"a", b"b", b"c"] and np.array_equal(got[3], np.arange(3))
    assert got[4:] == [b"d", "PeerLost"]


def test_close_calls_off_background_pairings(server: Any) -> None:
    """An isend to a rank that never comes and a recv from ANY_SOURCE (in another thread)
    start pairing threads that wait at the server; close() ends them within a fraction
    of a second (not at the pairing timeout): the isend's request and the recv raise
    PairingCancelled, no pairing thread is left and no waiting entry."""
    import time

    from fmi_client import Communicator, PairingCancelled

    before = len(server.server.room)
    comm = Communicator(0, 3, f"{server.host}:{server.port}", f"cancel{os.getpid()}", timeout=60)
    sent = comm.isend(b"to nobody", dest=1, tag=3)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            comm.recv(ANY_SOURCE, ANY_TAG)
        except BaseException as exc:
            errors.append(exc)

    receiver = threading.Thread(target=receive, name="test-any-source")
    receiver.start()
    deadline = time.monotonic() + 10
    while len(server.server.room) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.server.room) == before + 2  # pairings with 1 and 2 wait at the server
    closed_at = time.monotonic()
    comm.close()
    with pytest.raises(PairingCancelled, match="called off"):
        sent.wait()
    receiver.join(5)
    assert not receiver.is_alive() and len(errors) == 1, errors
    assert isinstance(errors[0], PairingCancelled), errors
    assert time.monotonic() - closed_at < 5  # not the 60 s pairing timeout
    names = ("fmi-pair-0-", "fmi-isend-")
    while time.monotonic() < deadline and any(
        t.name.startswith(names) for t in threading.enumerate()
    ):
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(names)]
    while len(server.server.room) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.server.room) == before  # the server saw the waits end

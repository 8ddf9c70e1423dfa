"""Ranks that never come or die mid-collective: errors name them, nobody hangs."""

from __future__ import annotations

import os
import threading

import pytest

from fmi_client import Communicator, NameTooLong, PeerLost, PeerNeverArrived
from tests.client.ranks import run_ranks


def test_rank_that_never_arrives_is_named(server) -> None:
    threads_before = threading.active_count()
    comm = Communicator(0, 3, f"{server.host}:{server.port}", f"absent-{os.getpid()}", timeout=0.5)
    with comm, pytest.raises(PeerNeverArrived) as info:
        comm.send("hello", 2)
    assert info.value.rank == 2
    assert "rank 2 never arrived" in str(info.value)
    assert threading.active_count() == threads_before


def test_dead_rank_makes_its_dependents_fail_instead_of_hang(server) -> None:
    size, victim = 4, 3
    comm_name = f"fault-{os.getpid()}"
    results = run_ranks(
        lambda rank: [
            "-m",
            "tests.client.fault_worker",
            server.host,
            str(server.port),
            str(rank),
            str(size),
            comm_name,
            str(victim),
        ],
        size,
        timeout=90,
    )
    assert results[victim].returncode == 3
    survivors = [r.json() for r in results if r.rank != victim]
    assert all(r.returncode == 0 for r in results if r.rank != victim)
    assert all(rep["error"] in ("PeerLost", "PeerNeverArrived") for rep in survivors), survivors
    # rank 2 exchanges with rank 3 first in both allreduce algorithms: it names the victim
    direct = next(rep for rep in survivors if rep["rank"] == 2)
    assert direct["error"] == "PeerLost" and direct["names"] == victim, direct
    assert f"rank {victim}" in direct["text"]


def test_comm_names_too_long_for_the_wire_are_refused_up_front() -> None:
    with pytest.raises(NameTooLong, match="shorter comm_name"):
        Communicator(0, 1000, "127.0.0.1:1", "c" * 95)


def test_pairing_names_are_unique_per_communicator_and_pair() -> None:
    """FMI's comm_name + "1_11" style names collide ("A1"+"1_3" == "A"+"11_3"); ours do not."""
    seen = {}
    for comm_name in ("A", "A1", "A#1", "A#1-1"):
        comm = Communicator(0, 12, "127.0.0.1:1", comm_name)
        for a in range(12):
            for b in range(a + 1, 12):
                name = comm.pairing_name(a, b)
                assert name == comm.pairing_name(b, a)
                assert seen.setdefault(name, (comm_name, a, b)) == (comm_name, a, b)


def test_silent_peer_raises_peer_lost_after_op_timeout(server) -> None:
    """A peer that is alive but never sends: op_timeout turns the wait into PeerLost."""
    name = f"silent-{os.getpid()}"
    address = f"{server.host}:{server.port}"
    comms = [Communicator(r, 2, address, name, timeout=20, op_timeout=0.5) for r in range(2)]

    def silent() -> None:
        comms[1].send("connected", 0)  # pairs, then says nothing more

    thread = threading.Thread(target=silent)
    thread.start()
    try:
        assert comms[0].recv(1) == "connected"
        with pytest.raises(PeerLost) as info:
            comms[0].recv(1)
    finally:
        thread.join(timeout=30)
        for comm in comms:
            comm.close()
    assert info.value.rank == 1 and "op_timeout=0.5" in str(info.value)


def test_big_pickled_objects_do_not_deadlock_an_exchange(server) -> None:
    """Both ranks send 48 MB at once (more than socket buffers hold) in recursive doubling."""
    name = f"bigpickle-{os.getpid()}"
    address = f"{server.host}:{server.port}"
    big = 48 * 1024 * 1024
    results: dict[int, object] = {}

    def rank(r: int) -> None:
        with Communicator(r, 2, address, name, timeout=20, op_timeout=60) as comm:
            payload = bytes([r]) * big  # not an array: goes as one bytes frame
            results[r] = comm.allreduce(payload, lambda a, b: a[:1] + b[:1] + bytes(len(a)))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    for r in range(2):
        got = results[r]
        assert isinstance(got, bytes) and got[:2] == b"\x00\x01" and len(got) == big + 2


def test_a_rank_whose_op_raises_releases_its_peers(server) -> None:
    """Rank 1's reduction op raises mid-allreduce and rank 1 keeps its communicator open
    (it caught the error): ranks 0 and 2 must still raise PeerLost at once instead of
    waiting for rank 1 (no op_timeout is set)."""
    name = f"opfails-{os.getpid()}"
    address = f"{server.host}:{server.port}"
    outcome: dict[int, BaseException | None] = {}
    peers_done = threading.Barrier(3, timeout=20)  # ranks 0 and 2, then rank 1 reads it

    def failing_add(a: int, b: int) -> int:
        raise ArithmeticError("rank 1 cannot add")

    def rank(r: int) -> None:
        op = failing_add if r == 1 else (lambda a, b: a + b)
        with Communicator(r, 3, address, name, timeout=20) as comm:
            comm.barrier()
            try:
                comm.allreduce(r, op)
                outcome[r] = None
            except BaseException as exc:  # recorded, asserted below
                outcome[r] = exc
            # Everyone waits here with the communicator still open: only the failing
            # rank's own abort can have released the others.
            peers_done.wait()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a rank was left waiting"
    assert not peers_done.broken, "ranks 0 and 2 stayed blocked while rank 1 was open"
    assert isinstance(outcome[1], ArithmeticError)
    for r in (0, 2):
        assert isinstance(outcome[r], PeerLost), (r, outcome[r])

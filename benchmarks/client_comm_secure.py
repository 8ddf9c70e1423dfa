"""Communicator links plain, authenticated and encrypted, measured in the same run.

Two parts, all through a real rendezvous server on loopback:

* point to point between two processes, one Communicator per mode: ``plain`` (no
  secret: today's links), ``auth`` (``secret=..., encrypt=False``: the proof in the
  clear) and ``tls`` (``secret=...``: TLS 1.3 + proof). The 8-byte round trip
  (send/recv of bytes) and one large numpy transfer, with the driver's CPU per round
  trip; interleaved rounds, best round each (as benchmarks/client_p2p.py).
* allreduce of ``--elements`` float32 (16 Mi) over ``--ranks`` processes (8), ``plain``
  then ``tls`` then ``plain`` again (so drift from other load shows), the median of
  ``--reps`` calls after a warm-up (which also pairs every link).

    .venv/bin/python benchmarks/client_comm_secure.py [--rtt-iters 3000] [--mib 64]
        [--rounds 3] [--ranks 8] [--elements 16777216] [--reps 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import client_common
import numpy as np

from fmi_client import Communicator

SECRET = "benchmark-job-secret-0123456789"
MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "auth": {"secret": SECRET, "encrypt": False},
    "tls": {"secret": SECRET, "encrypt": True},
}


def echo(address: str, name: str, mode: str, iters: int, nbytes: int, rounds: int) -> None:
    with Communicator(1, 2, address, name, timeout=60, **MODES[mode]) as comm:
        into = np.empty(nbytes, dtype=np.uint8)
        comm.send(comm.recv(0), 0)  # the warm-up that pairs the link
        for _ in range(rounds):
            for _ in range(iters):
                comm.send(comm.recv(0), 0)
            comm.recv(0, out=into)
            comm.send(b"k", 0)


def drive(comm: Communicator, iters: int, data: np.ndarray) -> tuple[float, float, float]:
    msg = b"8bytes!!"
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(iters):
        comm.send(msg, 1)
        comm.recv(1)
    rtt = (time.perf_counter() - start) / iters
    cpu = (time.process_time() - cpu) / iters
    start = time.perf_counter()
    comm.send(data, 1)
    comm.recv(1)
    return rtt, time.perf_counter() - start, cpu


def point_to_point(server: Any, args: argparse.Namespace) -> list[list[str]]:
    ctx = mp.get_context("fork")
    nbytes = args.mib << 20
    comms: dict[str, Communicator] = {}
    children = []
    try:
        for mode in MODES:
            name = f"bench-sec-{mode}-{time.monotonic_ns()}"
            child = ctx.Process(
                target=echo,
                args=(server.address, name, mode, args.rtt_iters, nbytes, args.rounds),
            )
            child.start()
            children.append(child)
            comms[mode] = Communicator(0, 2, server.address, name, timeout=60, **MODES[mode])
            comms[mode].send(b"warm", 1)  # pairs (and secures) the link now
            comms[mode].recv(1)
        data = np.ones(nbytes, dtype=np.uint8)
        best = {mode: [float("inf")] * 3 for mode in MODES}
        for _ in range(args.rounds):
            for mode, comm in comms.items():
                got = drive(comm, args.rtt_iters, data)
                best[mode] = [min(a, b) for a, b in zip(best[mode], got, strict=True)]
    finally:
        for child in children:
            child.join(timeout=120)
        for comm in comms.values():
            comm.close()
    base_rtt, base_s, _ = best["plain"]
    return [
        [
            mode,
            f"{rtt * 1e6:.1f}",
            f"{rtt / base_rtt:.2f}x",
            f"{cpu * 1e6:.1f}",
            f"{nbytes / seconds / 2**30:.2f}",
            f"{base_s / seconds:.0%}",
        ]
        for mode, (rtt, seconds, cpu) in best.items()
    ]


def allreduce_rank(address: str, name: str, mode: str, rank: int, args: Any, queue: Any) -> None:
    with Communicator(rank, args.ranks, address, name, timeout=120, **MODES[mode]) as comm:
        data = np.full(args.elements, rank + 1, dtype=np.float32)
        into = np.empty_like(data)
        comm.allreduce(data, "sum", out=into)  # warm up: pairs every link it needs
        times = []
        for _ in range(args.reps):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce(data, "sum", out=into)
            times.append(time.perf_counter() - start)
        assert into[0] == into[-1] == args.ranks * (args.ranks + 1) / 2
        slowest = comm.allreduce(statistics.median(times), "max")
        if rank == 0:
            queue.put(slowest)


def allreduce(server: Any, mode: str, args: argparse.Namespace) -> float:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    name = f"bench-ar-{mode}-{time.monotonic_ns()}"
    procs = [
        ctx.Process(target=allreduce_rank, args=(server.address, name, mode, r, args, queue))
        for r in range(args.ranks)
    ]
    for proc in procs:
        proc.start()
    try:
        result: float = queue.get(timeout=900)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-iters", type=int, default=3000)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--elements", type=int, default=16 << 20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-allreduce", action="store_true")
    args = parser.parse_args()
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        p2p_rows = point_to_point(server, args)
        runs: list[tuple[str, float]] = []
        if not args.skip_allreduce:
            for mode in ("plain", "tls", "plain"):
                runs.append((mode, allreduce(server, mode, args)))
    print(client_common.machine())
    print()
    print(
        client_common.table(
            [
                "Communicator links",
                "8 B round trip (us)",
                "vs plain",
                "driver CPU per round trip (us)",
                f"{args.mib} MiB (GiB/s)",
                "vs plain",
            ],
            p2p_rows,
        )
    )
    print(f"\nbest of {args.rounds} interleaved rounds ({args.rtt_iters} round trips each)")
    if runs:
        mib = args.elements * 4 / 2**20
        print()
        print(
            client_common.table(
                [f"allreduce {mib:g} MiB float32, {args.ranks} ranks", "median (s)", "GiB/s"],
                [[mode, f"{s:.3f}", f"{args.elements * 4 / s / 2**30:.2f}"] for mode, s in runs],
            )
        )
        print(f"\nmedian of {args.reps} calls on the slowest rank, after a warm-up call")


if __name__ == "__main__":
    main()

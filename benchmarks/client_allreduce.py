"""Allreduce over local ranks (one process each): fmi_client vs its bandwidth bound and mpi4py.

For each size (default 1 Mi and 16 Mi float32) and 8 ranks: the median time of an
allreduce (the slowest rank's time, after a barrier), the textbook bound
2(p-1)/p * N / B with B the point-to-point bandwidth measured between two of the same
ranks in the same run, and (if mpi4py and mpirun exist) mpi4py's Allreduce restricted to
TCP (``--mca btl tcp,self``). Prints a Markdown table. On one machine all ranks share
one loopback and its cores, so the table also gives p times the bound (every rank's
traffic through the one measured link).

    .venv/bin/python benchmarks/client_allreduce.py [--ranks 8] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import time

import client_common
import numpy as np

SIZES = [1 << 20, 16 << 20]  # float32 elements


def timed_allreduce(comm, data, reps: int, allreduce) -> float:
    allreduce(data)  # warm up (and connect)
    times = []
    for _ in range(reps):
        comm_barrier(comm)
        start = time.perf_counter()
        allreduce(data)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
    return statistics.median(times)


def comm_barrier(comm) -> None:
    (comm.Barrier if hasattr(comm, "Barrier") else comm.barrier)()


def fmi_rank(address: str, name: str, rank: int, size: int, reps: int, queue) -> None:
    from fmi_client import Communicator

    with Communicator(rank, size, address, name, timeout=60) as comm:
        results = {}
        # point-to-point bandwidth between ranks 0 and 1 (others wait at the barrier)
        nbytes = 64 << 20
        buf = np.ones(nbytes, dtype=np.uint8)
        if rank in (0, 1):
            other = 1 - rank
            comm.send(b"warm", other)
            comm.recv(other)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                if rank == 0:
                    comm.send(buf, 1)
                    comm.recv(1)
                else:
                    comm.recv(0, out=buf)
                    comm.send(b"k", 0)
                best = min(best, time.perf_counter() - start)
            results["p2p_bw"] = nbytes / best
        comm.barrier()
        for elements in SIZES:
            data = np.full(elements, rank + 1, dtype=np.float32)
            mine = timed_allreduce(comm, data, reps, lambda d: comm.allreduce(d, "sum"))
            slowest = comm.allreduce(mine, "max")
            check = comm.allreduce(data, "sum")
            assert check[0] == size * (size + 1) / 2
            results[str(elements)] = slowest
        if rank == 0:
            queue.put(results)


def mpi_worker(reps: int) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    results = {}
    for elements in SIZES:
        data = np.full(elements, comm.rank + 1, dtype=np.float32)
        out = np.empty_like(data)
        mine = timed_allreduce(
            comm, data, reps, lambda d, out=out: comm.Allreduce(d, out, op=MPI.SUM)
        )
        results[str(elements)] = comm.allreduce(mine, op=MPI.MAX)
    if comm.rank == 0:
        print(json.dumps(results), flush=True)


def run_mpi(ranks: int, reps: int) -> dict | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    mpirun = shutil.which("mpirun")
    if not mpirun:
        return None
    argv = [
        mpirun,
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        str(ranks),
        "--mca",
        "btl",
        "tcp,self",
        "--mca",
        "pml",
        "ob1",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        sys.executable,
        __file__,
        "--mpi-worker",
        "--reps",
        str(reps),
    ]
    env = {
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"mpirun failed: {done.stderr[-800:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-mpi", action="store_true", help="skip the mpi4py comparison")
    args = parser.parse_args()
    if args.mpi_worker:
        mpi_worker(args.reps)
        return
    from rendezvous.embedded import BackgroundServer

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    name = f"bench-allreduce-{time.monotonic_ns()}"
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        procs = [
            ctx.Process(
                target=fmi_rank, args=(server.address, name, r, args.ranks, args.reps, queue)
            )
            for r in range(args.ranks)
        ]
        for proc in procs:
            proc.start()
        results = queue.get(timeout=600)
        for proc in procs:
            proc.join(timeout=60)
    mpi = None if args.no_mpi else run_mpi(args.ranks, args.reps)
    p = args.ranks
    bw = results["p2p_bw"]
    rows = []
    for elements in SIZES:
        nbytes = elements * 4
        bound = 2 * (p - 1) / p * nbytes / bw  # each rank on its own link
        shared = p * bound  # all ranks' traffic through the one loopback of this machine
        t = results[str(elements)]
        mpi_t = mpi[str(elements)] if mpi else None
        rows.append(
            [
                f"{elements >> 20} Mi float32 ({nbytes >> 20} MiB)",
                f"{t * 1e3:.1f}",
                f"{bound * 1e3:.1f} ({t / bound:.2f}x)",
                f"{shared * 1e3:.1f} ({t / shared:.2f}x)",
                f"{mpi_t * 1e3:.1f}" if mpi_t else "n/a",
                f"{mpi_t / t:.2f}x" if mpi_t else "n/a",
            ]
        )
    print(client_common.machine())
    print(
        f"\n{p} ranks on loopback; point-to-point bandwidth in this run: {bw / 2**30:.2f} GiB/s\n"
    )
    print(
        client_common.table(
            [
                "allreduce (sum)",
                "fmi_client (ms)",
                "link bound 2(p-1)/p*N/B (ms, ratio)",
                "shared-loopback bound, p x link (ms, ratio)",
                "mpi4py TCP (ms)",
                "mpi4py / fmi_client",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

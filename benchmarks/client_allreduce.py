"""Allreduce over local ranks (one process each): fmi_client vs its bandwidth bound and mpi4py.

For each size (default 1 Mi and 16 Mi float32) and 8 ranks: the median time of an
allreduce (the slowest rank's time, after a barrier), both ``allreduce(x)`` (a fresh
result array) and ``allreduce(x, out=buf)`` (like mpi4py's ``Allreduce(x, buf)``), and
(if mpi4py and mpirun exist) mpi4py's Allreduce restricted to TCP (``--mca btl tcp,self``).

Three bounds, all from figures measured in the same run:

- link bound 2(p-1)/p * N / B, B the point-to-point bandwidth between two of the ranks:
  right when every rank has a link (and cores) of its own;
- shared-loopback bound p * link bound = 2(p-1) N / B: every rank's traffic through the
  one measured link;
- CPU bound (2(p-1) N * c_xfer + (p-1) N * c_op) / cores: on one machine a loopback byte
  costs CPU on both ends (c_xfer: CPU seconds of sender plus receiver per byte, measured
  with process_time during the B measurement) and every rank folds (p-1)/p of N (c_op:
  seconds per byte of numpy's in-place add); all of it shared by the machine's cores.
  This is the bound that holds for p ranks on a 2-core machine.

Prints a Markdown table.

    .venv/bin/python benchmarks/client_allreduce.py [--ranks 8] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
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
            cpu = time.process_time()
            for _ in range(5):
                start = time.perf_counter()
                if rank == 0:
                    comm.send(buf, 1)
                    comm.recv(1)
                else:
                    comm.recv(0, out=buf)
                    comm.send(b"k", 0)
                best = min(best, time.perf_counter() - start)
            cpu = time.process_time() - cpu
            if rank == 1:
                comm.send(cpu, 0)
            else:
                results["p2p_bw"] = nbytes / best
                results["c_xfer"] = (cpu + comm.recv(1)) / (5 * nbytes)
                a, b = np.ones(16 << 20, np.float32), np.ones(16 << 20, np.float32)
                adds = []
                for _ in range(3):
                    start = time.perf_counter()
                    np.add(a, b, out=a)
                    adds.append(time.perf_counter() - start)
                results["c_op"] = min(adds) / a.nbytes
        comm.barrier()
        for elements in SIZES:
            data = np.full(elements, rank + 1, dtype=np.float32)
            mine = timed_allreduce(comm, data, reps, lambda d: comm.allreduce(d, "sum"))
            results[str(elements)] = comm.allreduce(mine, "max")
            into = np.empty_like(data)
            mine = timed_allreduce(
                comm, data, reps, lambda d, into=into: comm.allreduce(d, "sum", out=into)
            )
            results[f"{elements}-out"] = comm.allreduce(mine, "max")
            check = comm.allreduce(data, "sum", out=into)
            assert check is into and check[0] == check[-1] == size * (size + 1) / 2
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
    bw, c_xfer, c_op = results["p2p_bw"], results["c_xfer"], results["c_op"]
    cores = os.cpu_count() or 1
    rows = []
    for elements in SIZES:
        nbytes = elements * 4
        bound = 2 * (p - 1) / p * nbytes / bw  # each rank on its own link
        shared = p * bound  # all ranks' traffic through the one loopback of this machine
        cpu_bound = (2 * (p - 1) * nbytes * c_xfer + (p - 1) * nbytes * c_op) / min(cores, p)
        t, t_out = results[str(elements)], results[f"{elements}-out"]
        mpi_t = mpi[str(elements)] if mpi else None
        rows.append(
            [
                f"{elements >> 20} Mi float32 ({nbytes >> 20} MiB)",
                f"{t * 1e3:.1f}",
                f"{t_out * 1e3:.1f}",
                f"{mpi_t * 1e3:.1f}" if mpi_t else "n/a",
                f"{mpi_t / t:.2f}x / {mpi_t / t_out:.2f}x" if mpi_t else "n/a",
                f"{bound * 1e3:.1f} ({t_out / bound:.2f}x)",
                f"{shared * 1e3:.1f} ({t_out / shared:.2f}x)",
                f"{cpu_bound * 1e3:.1f} ({t_out / cpu_bound:.2f}x)",
            ]
        )
    print(client_common.machine())
    print(
        f"\n{p} ranks on loopback; measured in this run: point-to-point bandwidth B "
        f"{bw / 2**30:.2f} GiB/s, loopback CPU c_xfer {c_xfer * 2**30:.2f} s/GiB "
        f"(sender + receiver), in-place add c_op {c_op * 2**30:.3f} s/GiB; {cores} cores\n"
    )
    print(
        client_common.table(
            [
                "allreduce (sum)",
                "fmi_client (ms)",
                "fmi_client out= (ms)",
                "mpi4py TCP (ms)",
                "mpi4py / fmi_client (plain / out=)",
                "link bound (ms; out= ratio)",
                "p x link bound (ms; ratio)",
                "CPU bound (ms; ratio)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

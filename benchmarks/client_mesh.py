"""Time to pair a full mesh of local ranks (every pair of ranks gets its own connection).

N processes each build a Communicator and call connect_all(), which pairs in rounds of
disjoint pairs (N-1 rounds, N(N-1)/2 connections through the rendezvous server). Reports
the wall time from the start of the first rank to the last rank being fully connected,
and the same for plain Python process start-up as the baseline.

    .venv/bin/python benchmarks/client_mesh.py [--ranks 32]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import client_common

import fmi_client  # noqa: F401  (imported before fork: ranks time pairing, not imports)


def rank_main(address: str, name: str, rank: int, size: int, queue) -> None:
    from fmi_client import Communicator

    with Communicator(rank, size, address, name, timeout=120) as comm:
        start = time.perf_counter()
        comm.connect_all()
        connected = time.perf_counter()
        comm.barrier()
        queue.put((rank, connected - start, time.time()))


def idle(queue) -> None:
    queue.put(time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=32)
    args = parser.parse_args()
    from rendezvous.embedded import BackgroundServer

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    # baseline: starting the same number of processes that do nothing
    started = time.time()
    procs = [ctx.Process(target=idle, args=(queue,)) for _ in range(args.ranks)]
    for proc in procs:
        proc.start()
    idle_done = max(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join()
    baseline = idle_done - started

    name = f"bench-mesh-{time.monotonic_ns()}"
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        started = time.time()
        procs = [
            ctx.Process(target=rank_main, args=(server.address, name, r, args.ranks, queue))
            for r in range(args.ranks)
        ]
        for proc in procs:
            proc.start()
        reports = [queue.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
    wall = max(r[2] for r in reports) - started
    per_rank = max(r[1] for r in reports)
    pairs = args.ranks * (args.ranks - 1) // 2
    print(client_common.machine())
    print()
    print(
        client_common.table(
            [
                "ranks",
                "connections",
                "full mesh, wall (s)",
                "slowest rank's connect_all (s)",
                "per connection (ms)",
                f"baseline: start {args.ranks} idle processes (s)",
            ],
            [
                [
                    str(args.ranks),
                    str(pairs),
                    f"{wall:.2f}",
                    f"{per_rank:.2f}",
                    f"{per_rank / (args.ranks - 1) * 1e3:.1f}",
                    f"{baseline:.2f}",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()

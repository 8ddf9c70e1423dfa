"""A two-way exchange of numpy arrays between two processes: Channel.exchange vs threads.

Both processes send an array to each other at once (the step of every reduce-scatter and
allgather) over a loopback TCP connection. Baseline, measured in the same run: a raw
blocking socket pair where each side sends from a helper thread and receives with
``recv_into`` (``MSG_WAITALL``) a preallocated array, which is how fmi_client did it
before its exchanges became full duplex in one thread (non-blocking socket + poll()).
Reports the median exchange time, the bytes moved per second (both directions), and the
CPU time of both processes per exchange, from interleaved rounds.

    .venv/bin/python benchmarks/client_exchange.py [--reps 15]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import statistics
import threading
import time

import client_common
import numpy as np

from fmi_client.channel import Channel

SIZES = [256 << 10, 8 << 20]  # float32 elements: 1 MiB and 32 MiB each way


def threaded_exchange(sock: socket.socket, data: np.ndarray, into: np.ndarray) -> None:
    sender = threading.Thread(target=sock.sendall, args=(memoryview(data).cast("B"),))
    sender.start()
    view, pos = memoryview(into).cast("B"), 0
    while pos < len(view):
        got = sock.recv_into(view[pos:], 0, socket.MSG_WAITALL)
        if not got:
            raise EOFError
        pos += got
    sender.join()


def side(modes: dict, me: int, reps: int, queue) -> None:
    """Run every mode ``reps`` times, interleaved; rank 0 reports times and CPU."""
    channels = {label: Channel(socks[me], me, 1 - me) for label, socks in modes.items()}
    results: dict[str, list] = {}
    for elements in SIZES:
        data = np.full(elements, me, dtype=np.float32)
        into = np.empty_like(data)
        for _ in range(reps + 1):  # the first round warms up
            for label, channel in channels.items():
                cpu, start = time.process_time(), time.perf_counter()
                if label == "baseline":
                    threaded_exchange(channel.sock, data, into)
                else:
                    channel.exchange(data, -1, into)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert into[0] == 1 - me and into[-1] == 1 - me
                results.setdefault(f"{label}/{elements}", []).append((wall, cpu))
    queue.put((me, results))
    for channel in channels.values():
        channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    modes = {"baseline": client_common.tcp_socketpair(), "exchange": client_common.tcp_socketpair()}
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=side, args=(modes, 1, args.reps, queue))
    child.start()
    side(modes, 0, args.reps, queue)
    got = dict([queue.get(timeout=300), queue.get(timeout=300)])
    child.join(timeout=60)
    rows = []
    for elements in SIZES:
        nbytes = elements * 4
        base = None
        for label, title in (
            ("baseline", "raw socket, send thread + recv_into (baseline)"),
            ("exchange", "Channel.exchange (full duplex, one thread)"),
        ):
            key = f"{label}/{elements}"
            walls = [max(a[0], b[0]) for a, b in zip(got[0][key], got[1][key], strict=True)][1:]
            cpus = [a[1] + b[1] for a, b in zip(got[0][key], got[1][key], strict=True)][1:]
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            base = base or wall
            rows.append(
                [
                    f"{nbytes >> 20} MiB each way",
                    title,
                    f"{wall * 1e3:.2f}",
                    f"{base / wall:.2f}x",
                    f"{2 * nbytes / wall / 2**30:.2f}",
                    f"{cpu * 1e3:.2f}",
                ]
            )
    print(client_common.machine())
    print()
    print(
        client_common.table(
            [
                "size",
                "path",
                "exchange (ms)",
                "speed vs baseline",
                "both ways (GiB/s)",
                "CPU, both processes (ms)",
            ],
            rows,
        )
    )
    print(f"\nmedians of {args.reps} interleaved rounds after a warm-up round")


if __name__ == "__main__":
    main()

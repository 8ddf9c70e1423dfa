"""Point to point over a punched connection vs raw socket pairs, measured in the same run.

8-byte round trip (ping-pong between two processes) and 64 MiB bandwidth (numpy arrays,
received with recv_into a preallocated array) for: a raw TCP socket pair on loopback
(the baseline), an AF_UNIX socketpair() (for reference), the raw socket pair() returns,
and Communicator.send/recv (framing included). The modes are measured in interleaved
rounds and each reports its best round, so a noisy neighbour hurts them all alike. The
driving process's CPU time per round trip (process_time: user + kernel) is also shown:
it is what framing adds, and scheduling noise barely moves it. The driver and every echo
process are pinned to the same CPU (sched_setaffinity), so that no mode is favoured by
where the scheduler happened to put its echo process; the same CPU, not two, because on
a VM a wake-up across vCPUs costs tens of microseconds and would drown what we measure.

    .venv/bin/python benchmarks/client_p2p.py [--rtt-iters 5000] [--mib 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import time

import client_common
import numpy as np

from fmi_client import Communicator, pair


class Raw:
    """Echo side and driving side over a plain socket."""

    def __init__(self, sock: socket.socket, iters: int, nbytes: int) -> None:
        self.sock, self.iters, self.nbytes = sock, iters, nbytes

    def echo(self, rounds: int) -> None:
        buf, big = bytearray(8), np.empty(self.nbytes, dtype=np.uint8)
        for _ in range(rounds):
            for _ in range(self.iters):
                client_common.recv_exact_into(self.sock, memoryview(buf))
                self.sock.sendall(buf)
            client_common.recv_exact_into(self.sock, memoryview(big))
            self.sock.sendall(b"k")

    def drive(self) -> tuple[float, float, float]:
        msg, buf, ack = b"8bytes!!", bytearray(8), bytearray(1)
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(self.iters):
            self.sock.sendall(msg)
            client_common.recv_exact_into(self.sock, memoryview(buf))
        rtt = (time.perf_counter() - start) / self.iters
        cpu = (time.process_time() - cpu) / self.iters
        data = np.ones(self.nbytes, dtype=np.uint8)
        start = time.perf_counter()
        self.sock.sendall(memoryview(data))
        client_common.recv_exact_into(self.sock, memoryview(ack))
        return rtt, time.perf_counter() - start, cpu


class Comm:
    """The same exchanges through Communicator.send/recv."""

    def __init__(self, comm: Communicator, iters: int, nbytes: int) -> None:
        self.comm, self.iters, self.nbytes = comm, iters, nbytes

    def echo(self, rounds: int) -> None:
        into = np.empty(self.nbytes, dtype=np.uint8)
        for _ in range(rounds):
            for _ in range(self.iters):
                self.comm.send(self.comm.recv(0), 0)
            self.comm.recv(0, out=into)
            self.comm.send(b"k", 0)

    def drive(self) -> tuple[float, float, float]:
        msg = b"8bytes!!"
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(self.iters):
            self.comm.send(msg, 1)
            self.comm.recv(1)
        rtt = (time.perf_counter() - start) / self.iters
        cpu = (time.process_time() - cpu) / self.iters
        data = np.ones(self.nbytes, dtype=np.uint8)
        start = time.perf_counter()
        self.comm.send(data, 1)
        self.comm.recv(1)
        return rtt, time.perf_counter() - start, cpu


DRIVER_CPU = ECHO_CPU = 0


def pin(cpu: int) -> None:
    """Run this process on ``cpu`` alone."""
    os.sched_setaffinity(0, {cpu})


def child_socket(sock: socket.socket, iters: int, nbytes: int, rounds: int) -> None:
    pin(ECHO_CPU)
    Raw(sock, iters, nbytes).echo(rounds)


def child_punched(address, name: str, iters: int, nbytes: int, rounds: int) -> None:
    pin(ECHO_CPU)
    with pair(name, *address, timeout=30) as sock:
        Raw(sock, iters, nbytes).echo(rounds)


def child_comm(address: str, name: str, iters: int, nbytes: int, rounds: int) -> None:
    pin(ECHO_CPU)
    with Communicator(1, 2, address, name, timeout=30) as comm:
        Comm(comm, iters, nbytes).echo(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-iters", type=int, default=5000)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    nbytes, iters, rounds = args.mib * 2**20, args.rtt_iters, args.rounds
    ctx = mp.get_context("fork")
    from rendezvous.embedded import BackgroundServer

    drivers: dict[str, Raw | Comm] = {}
    children = []
    closers = []
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        for label, make in (
            ("raw TCP socket pair on loopback (baseline)", client_common.tcp_socketpair),
            ("raw AF_UNIX socketpair() (for reference)", socket.socketpair),
        ):
            a, b = make()
            child = ctx.Process(target=child_socket, args=(b, iters, nbytes, rounds))
            child.start()
            b.close()
            drivers[label] = Raw(a, iters, nbytes)
            children.append(child)
            closers.append(a.close)
        name = f"bench-p2p-{time.monotonic_ns()}"
        child = ctx.Process(
            target=child_punched, args=((server.host, server.port), name, iters, nbytes, rounds)
        )
        child.start()
        children.append(child)
        start = time.perf_counter()
        sock = pair(name, server.host, server.port, timeout=30)
        pair_s = time.perf_counter() - start
        drivers["punched socket from pair()"] = Raw(sock, iters, nbytes)
        closers.append(sock.close)
        name = f"bench-comm-{time.monotonic_ns()}"
        child = ctx.Process(target=child_comm, args=(server.address, name, iters, nbytes, rounds))
        child.start()
        children.append(child)
        comm = Communicator(0, 2, server.address, name, timeout=30)
        drivers["Communicator send/recv"] = Comm(comm, iters, nbytes)
        closers.append(comm.close)
        pin(DRIVER_CPU)  # after the children forked: they pin themselves to ECHO_CPU
        best: dict[str, list[float]] = {label: [float("inf")] * 3 for label in drivers}
        for _ in range(rounds):
            for label, driver in drivers.items():
                best[label] = [
                    min(old, new) for old, new in zip(best[label], driver.drive(), strict=True)
                ]
        for child in children:
            child.join(timeout=60)
        for close in closers:
            close()
    base_rtt, base_s, base_cpu = best["raw TCP socket pair on loopback (baseline)"]
    rows = [
        [
            label,
            f"{rtt * 1e6:.1f}",
            f"{rtt / base_rtt:.2f}x",
            f"{cpu * 1e6:.1f} (+{(cpu - base_cpu) * 1e6:.1f})",
            f"{nbytes / seconds / 2**30:.2f}",
            f"{base_s / seconds:.0%}",
        ]
        for label, (rtt, seconds, cpu) in best.items()
    ]
    print(client_common.machine())
    print()
    print(
        client_common.table(
            [
                "path",
                "8 B round trip (us)",
                "vs baseline",
                "driver CPU per round trip (us, + over baseline)",
                f"{args.mib} MiB (GiB/s)",
                "vs baseline",
            ],
            rows,
        )
    )
    print(
        f"\nbest of {rounds} interleaved rounds ({iters} round trips, one {args.mib} MiB "
        f"transfer each); pair() on loopback took {pair_s * 1e3:.1f} ms incl. the peer's start"
    )


if __name__ == "__main__":
    main()

"""Relayed vs direct bandwidth on loopback, server CPU per relayed GiB, discovery time.

In one run: a plain TCP socket pair on loopback (the baseline) and the same transfer
through the server's relay (``relay_connect`` on both ends), in interleaved rounds, best
round of each; the server is a real ``rendezvous serve`` process, and its CPU time
(utime + stime from /proc/PID/stat) over the relayed rounds gives CPU seconds per
relayed GiB. Then ``discover_nat`` (two connections from one local port, one answer
each) against one plain TCP round trip (connect, then an 8-byte answer) to the same
server, medians over many runs.

    .venv/bin/python benchmarks/relay.py [--mib 1024] [--rounds 3] [--loop auto]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import client_common

from fmi_client.relay import discover_nat, relay_connect
from testbed.procs import free_port

CHUNK = 1 << 20


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transfer(a: socket.socket, b: socket.socket, nbytes: int) -> float:
    """Seconds to move ``nbytes`` from a to b (a sender thread, recv_into on b)."""
    block = b"\x5a" * CHUNK

    def send() -> None:
        for _ in range(nbytes // CHUNK):
            a.sendall(block)

    view = memoryview(bytearray(CHUNK))
    sender = threading.Thread(target=send)
    start = time.perf_counter()
    sender.start()
    got = 0
    while got < nbytes:
        n = b.recv_into(view)
        if not n:
            raise EOFError(f"closed after {got} bytes")
        got += n
    elapsed = time.perf_counter() - start
    sender.join()
    return elapsed


def relayed_pair(name: str, port: int) -> tuple[socket.socket, socket.socket]:
    deadline = time.monotonic() + 10
    holder: dict[str, socket.socket] = {}
    thread = threading.Thread(
        target=lambda: holder.setdefault("a", relay_connect(name, "127.0.0.1", port, deadline))
    )
    thread.start()
    time.sleep(0.05)
    b = relay_connect(name, "127.0.0.1", port, deadline)
    thread.join()
    return holder["a"], b


def one_round_trip(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        got = b""
        while len(got) < 8:
            chunk = sock.recv(8 - len(got))
            if not chunk:
                break
            got += chunk
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--discovery-runs", type=int, default=300)
    args = parser.parse_args()
    port, dport = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rendezvous", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--discovery-port", str(dport), "--no-http", "--loop", args.loop,
         "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", dport), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        nbytes = args.mib * CHUNK
        direct, relayed, cpu = [], [], 0.0
        client_cpu = {"direct": 0.0, "relayed": 0.0}  # this process: sender + receiver
        for index in range(args.rounds):
            a, b = client_common.tcp_socketpair()
            with a, b:
                mine = time.process_time()
                direct.append(transfer(a, b, nbytes))
                client_cpu["direct"] += time.process_time() - mine
            a, b = relayed_pair(f"bench-{os.getpid()}-{index}", port)
            with a, b:
                before, mine = cpu_seconds(server.pid), time.process_time()
                relayed.append(transfer(a, b, nbytes))
                cpu += cpu_seconds(server.pid) - before
                client_cpu["relayed"] += time.process_time() - mine
        gib = nbytes / (1 << 30)
        best_direct, best_relayed = gib / min(direct), gib / min(relayed)
        cpu_per_gib = cpu / (gib * args.rounds)
        discovery, rtt = [], []
        for _ in range(args.discovery_runs):
            start = time.perf_counter()
            discover_nat("127.0.0.1", port, dport, 0, time.monotonic() + 5)
            discovery.append(time.perf_counter() - start)
            rtt.append(one_round_trip(dport))
        print(f"Machine: {client_common.machine()}; server loop: {args.loop}\n")
        ratio = f"{best_relayed / best_direct:.2f}"
        print(
            client_common.table(
                ["path", f"best of {args.rounds} x {args.mib} MiB", "relayed/direct"],
                [
                    ["direct TCP, loopback", f"{best_direct:.2f} GiB/s", ""],
                    ["through the relay", f"{best_relayed:.2f} GiB/s", ratio],
                ],
            )
        )
        print(f"\nserver CPU per relayed GiB: {cpu_per_gib:.3f} s")
        per_gib = {k: v / (gib * args.rounds) for k, v in client_cpu.items()}
        print(
            f"CPU per GiB, both clients together: direct {per_gib['direct']:.3f} s, relayed "
            f"{per_gib['relayed']:.3f} s (+ the server's {cpu_per_gib:.3f} s); load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        med_d, med_r = statistics.median(discovery), statistics.median(rtt)
        print(
            f"discovery (median of {args.discovery_runs}): {med_d * 1e3:.3f} ms; one TCP round "
            f"trip to the same server: {med_r * 1e3:.3f} ms; difference "
            f"{(med_d - med_r) * 1e3:.3f} ms"
        )
        print(
            json.dumps(
                {
                    "direct_gib_s": best_direct,
                    "relayed_gib_s": best_relayed,
                    "server_cpu_s_per_gib": cpu_per_gib,
                    "client_cpu_s_per_gib": per_gib,
                    "discovery_ms": med_d * 1e3,
                    "round_trip_ms": med_r * 1e3,
                }
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()

"""Server processes with the room in Redis against the in-memory server, in the same run.

Starts ``rendezvous serve`` processes on loopback (``--log-level WARNING``, so the figures
are the pairing path, not the log line) and one ``redis-server``, then measures from
this process (asyncio clients, v2):

- latency per pairing, sequential: from the newcomer's connect until both sides have
  PAIRED (a waiter already WAITING); the in-memory server, then two Redis replicas with
  the sides on different replicas;
- server CPU per pairing (utime+stime of every server process from /proc, Redis's
  own CPU apart) and pairings/s with ``--concurrency`` pairs in flight, for the
  in-memory server and 1, 2 and 3 Redis replicas (sides on different replicas when
  there are several).

Run::

    python benchmarks/replica_servers.py --pairs 1000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tcpunch import (  # noqa: E402
    V2_RESPONSE_SIZE,
    Status,
    decode_v2_response,
    encode_v2_request,
)
from testbed.procs import free_port  # noqa: E402
from testbed.redis_server import RedisServer  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Server:
    """One ``rendezvous serve`` process; ``redis_url`` None: the in-memory room."""

    def __init__(self, workdir: Path, name: str, redis_url: str | None) -> None:
        self.log = workdir / f"{name}.log"
        self.port, self.http_port = free_port(), free_port()
        args = [sys.executable, "-m", "rendezvous", "serve", "--host", HOST]
        args += ["--port", str(self.port), "--http-port", str(self.http_port)]
        args += ["--discovery-port", "0", "--log-level", "WARNING"]
        if redis_url is not None:
            args += ["--redis", redis_url, "--replica-id", name, "--redis-prefix", "bench:"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RENDEZVOUS_")}
        env["PYTHONPATH"] = str(REPO)
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.http_port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.log.read_text()) from None
                time.sleep(0.05)
        raise RuntimeError("server did not listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def pair(a: int, b: int, name: str) -> float:
    """One pairing: the waiter on port ``a`` WAITING, then the newcomer on ``b``."""
    ra, wa = await asyncio.open_connection(HOST, a)
    wa.write(encode_v2_request(name))
    assert decode_v2_response(await ra.readexactly(V2_RESPONSE_SIZE)).status is Status.WAITING
    start = time.perf_counter()
    rb, wb = await asyncio.open_connection(HOST, b)
    wb.write(encode_v2_request(name))
    for reader in (rb, ra):
        response = decode_v2_response(await reader.readexactly(V2_RESPONSE_SIZE))
        assert response.status is Status.PAIRED, response
    took = time.perf_counter() - start
    for writer in (wa, wb):
        writer.close()
    return took


async def sequential(ports: list[int], pairs: int, tag: str) -> list[float]:
    samples = []
    for i in range(pairs):
        samples.append(await pair(ports[0], ports[-1], f"{tag}-seq-{i}"))
    return samples


async def concurrent(ports: list[int], pairs: int, concurrency: int, tag: str) -> float:
    """Wall seconds for ``pairs`` pairings, ``concurrency`` in flight; sides on
    consecutive replicas (round robin)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            a, b = ports[i % len(ports)], ports[(i + 1) % len(ports)]
            await pair(a, b, f"{tag}-con-{i}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(pairs)))
    return time.perf_counter() - start


def measure(
    workdir: Path, redis: RedisServer | None, replicas: int, args: argparse.Namespace
) -> dict[str, object]:
    label = "memory" if redis is None else f"redis-{replicas}"
    servers = [
        Server(workdir, f"{label}-{i}", None if redis is None else redis.url)
        for i in range(replicas)
    ]
    try:
        ports = [s.port for s in servers]
        time.sleep(1.5 if redis is not None else 0.2)  # replicas ready (heartbeat, notices)
        asyncio.run(sequential(ports, 50, label + "-warm"))
        latency = asyncio.run(sequential(ports, args.pairs, label))
        cpu0 = sum(cpu_seconds(s.proc.pid) for s in servers)
        rcpu0 = cpu_seconds(redis.proc.pid) if redis and redis.proc else 0.0
        wall = asyncio.run(concurrent(ports, args.pairs, args.concurrency, label))
        cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - cpu0
        rcpu = (cpu_seconds(redis.proc.pid) if redis and redis.proc else 0.0) - rcpu0
    finally:
        for server in servers:
            server.stop()
    return {
        "room": label,
        "p50_us": round(percentile(latency, 0.5) * 1e6, 1),
        "p99_us": round(percentile(latency, 0.99) * 1e6, 1),
        "pairings_per_s": round(args.pairs / wall),
        "server_cpu_us_per_pairing": round(cpu / args.pairs * 1e6, 1),
        "redis_cpu_us_per_pairing": round(rcpu / args.pairs * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON line per row")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows.append(measure(workdir, None, 1, args))
        redis = RedisServer(workdir)
        redis.start()
        try:
            for replicas in (1, 2, 3):
                rows.append(measure(workdir, redis, replicas, args))
        finally:
            redis.stop()
    print(f"{args.pairs} pairings each, v2, loopback, {os.cpu_count()} cores; latency sequential")
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['room']:>8}: p50 {row['p50_us']:8.1f} us  p99 {row['p99_us']:8.1f} us  "
                f"{row['pairings_per_s']:6d}/s at {args.concurrency} in flight  "
                f"server CPU {row['server_cpu_us_per_pairing']:7.1f} us/pairing  "
                f"redis CPU {row['redis_cpu_us_per_pairing']:6.1f} us/pairing"
            )


if __name__ == "__main__":
    main()

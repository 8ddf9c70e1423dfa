"""Pairing load generator and report for the rendezvous server.

Starts ``rendezvous serve`` as its own process on loopback, then drives it from this
process (asyncio + uvloop, Protocol-based clients, so the generator stays cheap):

- pairings/s, the server's CPU per pairing (utime+stime from /proc/PID/stat divided by
  pairings) and p50/p99 pairing latency at concurrency 100 and 1000 (pairs in flight),
  each clean and with 100 silent connections held open;
- 10,000 clients waiting at once (then all paired), with the server's RSS.

Every count is bounded. Usage::

    .venv/bin/python benchmarks/server_load.py            # the full report (~1-2 min)
    .venv/bin/python benchmarks/server_load.py --pairings 2000 --waiters 1000  # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` in seconds (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- the server process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "rendezvous", "serve",
        "--host", HOST, "--port", str(port), "--no-http", "--discovery-port", "0",
        "--loop", args.loop,
        "--log-level", args.server_log_level,
        "--max-connections", "19000",
        "--max-waiting-per-ip", "19000",
    ]  # fmt: skip
    with open(args.server_log, "w") as log:
        proc = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the server did not start: exit {proc.wait()}") from None
            time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- clients -----------------------------------------------------------------------------


class V1Client(asyncio.Protocol):
    """Sends the name, reads own endpoint (8) and peer endpoint (8), waits for close."""

    __slots__ = ("buf", "done", "name", "transport", "want")

    def __init__(self, name: bytes, done: asyncio.Future, want: int = 16) -> None:
        self.name = name
        self.done = done
        self.buf = b""
        self.want = want

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.name)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= self.want and not self.done.done():
            self.done.set_result(self.buf)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {len(self.buf)} bytes"))


class Silent(asyncio.Protocol):
    def __init__(self, lost: asyncio.Event) -> None:
        self.lost = lost

    def connection_lost(self, exc) -> None:
        self.lost.set()


async def hold_silent(count: int, port: int, stop: asyncio.Event) -> None:
    """Keep ``count`` connections open that never send a byte (reopened when dropped)."""
    loop = asyncio.get_running_loop()

    async def one() -> None:
        while not stop.is_set():
            lost = asyncio.Event()
            transport, _ = await loop.create_connection(lambda lost=lost: Silent(lost), HOST, port)
            stopped = asyncio.ensure_future(stop.wait())
            dropped = asyncio.ensure_future(lost.wait())
            await asyncio.wait({stopped, dropped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            dropped.cancel()
            transport.close()

    await asyncio.gather(*(one() for _ in range(count)))


@dataclass
class Run:
    concurrency: int
    silent: int
    pairings: int
    errors: int
    seconds: float
    server_cpu: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.pairings / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.pairings * 1e6

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def pair_once(loop, port: int, name: bytes) -> float:
    start = time.perf_counter()
    fa, fb = loop.create_future(), loop.create_future()
    ta, _ = await loop.create_connection(lambda: V1Client(name, fa), HOST, port)
    tb, _ = await loop.create_connection(lambda: V1Client(name, fb), HOST, port)
    try:
        await asyncio.wait_for(asyncio.gather(fa, fb), 30)
    finally:
        ta.close()
        tb.close()
    return time.perf_counter() - start


async def run_load(
    port: int, pid: int, pairings: int, concurrency: int, silent: int, tag: str
) -> Run:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    holder = asyncio.ensure_future(hold_silent(silent, port, stop)) if silent else None
    if silent:
        await asyncio.sleep(0.5)
    latencies: list[float] = []
    errors = 0
    issued = 0

    async def worker(w: int) -> None:
        nonlocal errors, issued
        while issued < pairings:
            issued += 1
            name = f"bench_{tag}_{w}_{issued}".encode()
            try:
                latencies.append(await pair_once(loop, port, name))
            except (OSError, ConnectionError, asyncio.TimeoutError):
                errors += 1

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    stop.set()
    if holder is not None:
        await asyncio.wait_for(holder, 10)
    return Run(concurrency, silent, len(latencies), errors, seconds, cpu, latencies)


async def many_waiting(port: int, pid: int, count: int) -> dict[str, float]:
    """``count`` v1 clients waiting at once; then a second wave pairs them all."""
    loop = asyncio.get_running_loop()
    rss0 = rss_mib(pid)
    firsts: list[asyncio.Future] = []
    transports = []
    errors = 0
    batch = 500
    for start in range(0, count, batch):
        futs = []
        for i in range(start, min(count, start + batch)):
            fut = loop.create_future()
            futs.append(
                loop.create_connection(lambda i=i, f=fut: V1Client(b"wait_%d" % i, f), HOST, port)
            )
            firsts.append(fut)
        for result in await asyncio.gather(*futs, return_exceptions=True):
            if isinstance(result, BaseException):
                errors += 1
            else:
                transports.append(result[0])
    # Every waiter has its own endpoint once the server has taken its name.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = sum(1 for t in transports if len(t.get_protocol().buf) >= 8)
        if got >= len(transports):
            break
        await asyncio.sleep(0.1)
    waiting = sum(1 for t in transports if len(t.get_protocol().buf) >= 8)
    rss = rss_mib(pid)
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    paired = 0
    for start in range(0, count, batch):
        futs = [loop.create_future() for _ in range(start, min(count, start + batch))]
        conns = await asyncio.gather(
            *(
                loop.create_connection(lambda i=i, f=f: V1Client(b"wait_%d" % i, f), HOST, port)
                for i, f in zip(range(start, start + len(futs)), futs, strict=True)
            ),
            return_exceptions=True,
        )
        results = await asyncio.gather(
            *(asyncio.wait_for(f, 30) for f in futs), return_exceptions=True
        )
        paired += sum(1 for r in results if not isinstance(r, BaseException))
        for c in conns:
            if not isinstance(c, BaseException):
                c[0].close()
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    firsts_done = await asyncio.gather(
        *(asyncio.wait_for(f, 30) for f in firsts), return_exceptions=True
    )
    first_ok = sum(1 for r in firsts_done if not isinstance(r, BaseException))
    for t in transports:
        t.close()
    return {
        "clients": count,
        "waiting": waiting,
        "connect_errors": errors,
        "rss_before_mib": rss0,
        "rss_mib": rss,
        "paired": paired,
        "first_wave_paired": first_ok,
        "pair_seconds": seconds,
        "cpu_us": cpu / max(paired, 1) * 1e6,
    }


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines()
             if line.startswith("Model name")),
            platform.processor(),
        )  # fmt: skip
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=REPO, timeout=10,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def start_reference(args: argparse.Namespace, workdir: str) -> tuple[subprocess.Popen, int]:
    """Build and start the C reference server (the original's design) on a free port."""
    binary = Path(workdir) / "server_reference"
    subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(REPO / "benchmarks" / "server_reference.c")],
        check=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen([str(binary), str(port)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            # A connection that sends nothing would stall it: send a throwaway name.
            with socket.create_connection((HOST, port), timeout=1) as probe:
                probe.sendall(b"probe_%d" % os.getpid())
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the reference server did not start") from None
            time.sleep(0.05)


def show(run: Run, label: str) -> None:
    print(
        f"  {label:10s} concurrency {run.concurrency:5d} silent {run.silent:3d}: "
        f"{run.rate:8.0f} pairings/s, {run.cpu_us:5.1f} us CPU/pairing, "
        f"p50 {run.pct(0.5):6.2f} ms, p99 {run.pct(0.99):6.2f} ms, errors {run.errors}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    import tempfile

    runs: list[Run] = []
    reference: list[Run] = []
    waiting = None
    with tempfile.TemporaryDirectory() as workdir:
        for rnd in range(args.rounds):
            proc, port = start_server(args)
            try:
                # Warm up (imports, allocator, code paths) before anything is measured.
                await run_load(port, proc.pid, min(1000, args.pairings), 50, 0, f"w{rnd}")
                for concurrency in args.concurrency:
                    for silent in (0, args.silent):
                        tag = f"r{rnd}c{concurrency}s{silent}"
                        run = await run_load(
                            port, proc.pid, args.pairings, concurrency, silent, tag
                        )
                        runs.append(run)
                        show(run, "rendezvous")
                if args.waiters and rnd == args.rounds - 1:
                    waiting = await many_waiting(port, proc.pid, args.waiters)
                    print(f"  {args.waiters} waiting: {json.dumps(waiting)}", flush=True)
            finally:
                code = stop_server(proc)
            if args.reference:
                ref, ref_port = start_reference(args, workdir)
                try:
                    await run_load(ref_port, ref.pid, min(1000, args.pairings), 50, 0, "w")
                    for concurrency in args.concurrency:
                        run = await run_load(
                            ref_port, ref.pid, args.pairings, concurrency, 0, f"ref{rnd}"
                        )
                        reference.append(run)
                        show(run, "C ref")
                finally:
                    ref.kill()
                    ref.wait()
    report(args, runs, reference, waiting, code)


def median_run(runs: list[Run]) -> Run:
    """Of repeated runs, the one with the median CPU per pairing (noise resistant)."""
    return sorted(runs, key=lambda r: r.cpu_us)[len(runs) // 2]


def report(args, runs: list[Run], reference: list[Run], waiting, exit_code: int) -> None:
    print()
    print(f"Machine: {machine()}; commit {commit()}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"server loop {args.loop}, log level {args.server_log_level}; "
          f"{args.rounds} round(s), median shown; load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print()
    print("| server | concurrency | silent conns | pairings | pairings/s | "
          "server CPU/pairing | p50 latency | p99 latency | errors |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    groups: dict[tuple[str, int, int], list[Run]] = {}
    for run in runs:
        groups.setdefault(("rendezvous", run.concurrency, run.silent), []).append(run)
    for run in reference:
        groups.setdefault(("C reference", run.concurrency, run.silent), []).append(run)
    chosen = {key: median_run(group) for key, group in groups.items()}
    for (server, concurrency, silent), run in chosen.items():
        print(
            f"| {server} | {concurrency} | {silent} | {run.pairings} | {run.rate:.0f} | "
            f"{run.cpu_us:.1f} us | {run.pct(0.5):.2f} ms | {run.pct(0.99):.2f} ms | "
            f"{sum(r.errors for r in groups[(server, concurrency, silent)])} |"
        )
    print()
    for concurrency in args.concurrency:
        clean = chosen.get(("rendezvous", concurrency, 0))
        silent = chosen.get(("rendezvous", concurrency, args.silent))
        ref = chosen.get(("C reference", concurrency, 0))
        if clean and silent:
            print(
                f"- concurrency {concurrency}: with {args.silent} silent connections "
                f"throughput is {silent.rate / clean.rate:.0%} of clean "
                f"(CPU/pairing {silent.cpu_us / clean.cpu_us:.2f}x)"
            )
        if clean and ref:
            print(
                f"- concurrency {concurrency}: CPU/pairing is {clean.cpu_us / ref.cpu_us:.2f}x "
                f"the C reference's; scaled to the original's 21.5 us that is "
                f"{clean.cpu_us / ref.cpu_us * 21.5:.1f} us"
            )
    if waiting:
        print(
            f"- {waiting['waiting']} of {waiting['clients']} clients waiting at once "
            f"(connect errors {waiting['connect_errors']}): server RSS "
            f"{waiting['rss_mib']:.1f} MiB (idle {waiting['rss_before_mib']:.1f} MiB); then "
            f"{waiting['paired']} newcomers paired ({waiting['first_wave_paired']} waiters "
            f"got their peer), {waiting['cpu_us']:.1f} us CPU/pairing"
        )
    print(f"- server exit code after SIGTERM: {exit_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairings", type=int, default=20000, help="pairings per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--silent", type=int, default=100, help="silent connections")
    parser.add_argument("--waiters", type=int, default=10000, help="0 to skip")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--server-log-level", default="INFO")
    parser.add_argument("--server-log", default="/dev/null", help="where its log goes")
    parser.add_argument("--rounds", type=int, default=1, help="repeat; the median is shown")
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false",
        help="skip the C reference server (needs gcc)",
    )  # fmt: skip
    args = parser.parse_args()
    if not 0 < args.pairings <= 1_000_000 or not 0 <= args.waiters <= 15_000:
        parser.error("--pairings must be in 1..1000000 and --waiters in 0..15000")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in 1..20")
    raise_nofile()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()

"""What the internet does to a public port, as test equipment: reset floods, idle and
malformed HTTP, mass pairings; and what the server process shows (fds, RSS, /metrics).

Everything goes to loopback; every count and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

from prometheus_client.parser import text_string_to_metric_families

from tests.server.serverproc import running

LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raise_own_nofile(at_least: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= at_least, f"this test needs an open-files hard limit of {at_least}"
    if soft < at_least:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def limit_nofile(limit: int) -> Callable[[], None]:
    """A preexec_fn that lowers the child's open-files limit (soft and hard)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@contextlib.contextmanager
def server_process(
    *args: str, env: dict[str, str] | None = None, nofile: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict]]:
    """``rendezvous serve`` on loopback with free ports; yields (process, listening line).
    Its stderr is a pipe that is read only up to the listening line."""
    with running(
        "--port", "0", "--http-port", "0", *args,
        env=env, preexec_fn=None if nofile is None else limit_nofile(nofile),
    ) as started:  # fmt: skip
        yield started


@contextlib.contextmanager
def reading_stderr(proc: subprocess.Popen[str]) -> Iterator[list[str]]:
    """Read the process's stderr in a thread (lines collected) while the block runs."""
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    thread = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        if proc.poll() is None:
            proc.kill()
        thread.join(timeout=20)


def stop_and_read(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then everything it wrote to stderr after the listening line."""
    proc.terminate()
    assert proc.stderr is not None
    out = proc.stderr.read()
    assert proc.wait(timeout=20) == 0
    return out


def assert_json_lines_only(text: str) -> list[dict]:
    """Every line is one JSON object; no traceback anywhere."""
    assert "Traceback" not in text, text[:2000]
    return [json.loads(line) for line in text.splitlines()]


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    status, body = http_get(port, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def rejected(m: dict[tuple[str, tuple], float], reason: str) -> float:
    return m.get(("rendezvous_rejected_total", (("reason", reason),)), 0)


def reset_flood(port: int, count: int) -> None:
    """``count`` connections, each reset (RST) right after the handshake, as scanners do."""
    for _ in range(count):
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
        finally:
            sock.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` every 10 ms; returns the seconds it took; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - start


async def v1_pair(port: int, name: bytes, timeout: float = 10) -> None:
    """One v1 pairing: a waits (its own endpoint back), b arrives; both get 16 bytes."""

    async def run() -> None:
        ra, wa = await asyncio.open_connection("127.0.0.1", port)
        try:
            wa.write(name)
            await ra.readexactly(8)
            rb, wb = await asyncio.open_connection("127.0.0.1", port)
            try:
                wb.write(name)
                assert len(await rb.readexactly(16)) == 16
                assert len(await ra.readexactly(8)) == 8
            finally:
                wb.close()
        finally:
            wa.close()

    await asyncio.wait_for(run(), timeout)


async def pair_many(port: int, stem: str, count: int, concurrency: int = 20) -> None:
    """``count`` v1 pairings, ``concurrency`` at a time (each bounded)."""
    names = iter(range(count))
    pid = os.getpid()

    async def worker() -> None:
        for i in names:
            await v1_pair(port, f"{stem}_{pid}_{i}".encode())

    await asyncio.gather(*(worker() for _ in range(concurrency)))

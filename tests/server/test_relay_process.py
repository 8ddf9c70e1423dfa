"""The relay in a real server process: memory stays bounded under a slow reader, SIGTERM
drains relay sessions, and the JSON log has a line per session start and end."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

from fmi_client.relay import relay_connect
from tests.server.serverproc import running

HOST = "127.0.0.1"
BIG = 64 << 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def both_ends(name: str, port: int) -> tuple[socket.socket, socket.socket]:
    deadline = time.monotonic() + 10
    holder: dict[str, socket.socket] = {}
    thread = threading.Thread(
        target=lambda: holder.setdefault("a", relay_connect(name, HOST, port, deadline))
    )
    thread.start()
    time.sleep(0.05)
    b = relay_connect(name, HOST, port, deadline)
    thread.join()
    return holder["a"], b


def test_slow_reader_keeps_server_memory_bounded() -> None:
    with running("--port", "0", "--http-port", "0", "--discovery-port", "0") as (proc, record):
        a, b = both_ends(f"big-{proc.pid}", record["port"])
        with a, b:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            before = rss_kib(proc.pid)
            sender = threading.Thread(target=a.sendall, args=(b"\xab" * BIG,))
            sender.start()
            peak, got = before, 0
            while got < BIG:  # a slow reader: 256 KiB, then a pause
                chunk = b.recv(256 << 10)
                assert chunk, f"relay ended after {got} bytes"
                got += len(chunk)
                if got % (4 << 20) < (256 << 10):
                    peak = max(peak, rss_kib(proc.pid))
                    time.sleep(0.02)
            sender.join()
        # backpressure: the 64 MiB never pile up in the server (two write buffers of at
        # most 1 MiB high water + one read each; Python's allocator keeps some around)
        assert got == BIG
        assert peak - before < 24 << 10, (before, peak)


def test_sigterm_ends_relay_sessions_within_the_drain_timeout() -> None:
    args = ("--port", "0", "--no-http", "--discovery-port", "0", "--drain-timeout", "1")
    with running(*args) as (proc, record):
        a, b = both_ends(f"drain-{proc.pid}", record["port"])
        with a, b:
            a.sendall(b"hello")
            assert b.recv(5) == b"hello"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            b.settimeout(10)
            try:
                end = b.recv(1)
            except ConnectionResetError:
                end = b"reset"
            assert end == b"reset"
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
        lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line]
    events = {line["event"]: line for line in lines}
    assert events["relay_start"]["pairing"] == f"drain-{proc.pid}"
    assert events["relay_end"]["reason"] == "drain" and events["relay_end"]["bytes"] == 5
    assert events["relay_end"]["duration_seconds"] > 0


def test_discovery_port_in_use_names_the_flag() -> None:
    import subprocess

    from tests.server.serverproc import CMD, clean_env

    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CMD, "serve", "--host", HOST, "--port", "0", "--no-http", "--discovery-port",
             str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )  # fmt: skip
    assert result.returncode == 1
    assert "--discovery-port" in result.stderr and "already in use" in result.stderr

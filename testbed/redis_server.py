"""A real redis-server for tests and benchmarks: a plain process on a free loopback
port, nothing on disk. Never the system service."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from testbed.procs import free_port, stop


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server --port N --save '' --appendonly no``; restartable on the same port
    (tests of a Redis that goes away and comes back). Never the system service."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        """Start and wait for PONG. The first start moves to another free port when
        the chosen one was taken meanwhile; a restart keeps its port (clients expect it)."""
        assert self.proc is None
        for attempt in range(1 if self.started_once else 5):
            if attempt:
                self.port = free_port()
            if self._launch(timeout):
                self.started_once = True
                return
        raise RuntimeError(f"redis-server could not listen on 127.0.0.1:{self.port}")

    def _launch(self, timeout: float) -> bool:
        log = self.workdir / "redis.log"
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _pongs(self.port):
            if self.proc.poll() is not None:
                self.proc = None
                text = log.read_text() if log.exists() else ""
                if "Address already in use" in text:
                    return False
                raise RuntimeError(f"redis-server exited: {text[-1000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

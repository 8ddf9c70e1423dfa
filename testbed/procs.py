"""Processes for tests and benchmarks: the repo's import path, and stopping for good."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_env() -> dict[str, str]:
    """This process's environment with the repo first on PYTHONPATH (for child ranks)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for servers that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process either way."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Real server processes for tests: start, wait until they answer, always stop them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from testbed.procs import free_port, stop
from tests.facilities import require

__all__ = ["free_port", "running", "stop"]


@contextlib.contextmanager
def running(
    proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 30
) -> Iterator[subprocess.Popen]:
    """Wait until ``ready()`` (polled every 0.1 s) and hand over ``proc``; stop it after.

    Fails with ``what`` named when the process exits or ``timeout`` passes first.
    """
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def moto_process(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A moto server process on loopback (this venv's moto); yields its endpoint URL.

    ``env`` replaces the process environment (e.g. to turn on IAM enforcement).
    """
    exe = Path(sys.executable).with_name("moto_server")
    require(exe.exists(), f"moto_server next to {sys.executable} (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        env=None if env is None else dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with running(proc, lambda: _answers(f"{url}/moto-api/"), "moto_server"):
        yield url

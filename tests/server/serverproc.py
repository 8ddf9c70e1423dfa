"""The server as a real process for tests: its command, a clean environment, running it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CMD = [sys.executable, "-m", "rendezvous"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDEZVOUS_")}
    env.pop("PORT", None)
    env["RENDEZVOUS_DISCOVERY_PORT"] = "0"  # off: the default 10002 would clash between runs
    env.update(extra)
    return env


@contextmanager
def running(
    *args: str, env: dict[str, str] | None = None, preexec_fn: Any = None
) -> Iterator[tuple]:
    """Start ``rendezvous serve``; yield (process, listening-log-record). Its stderr is a
    pipe read only up to the listening line; the process is killed afterwards."""
    proc = subprocess.Popen(
        [*CMD, "serve", "--host", "127.0.0.1", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env if env is not None else clean_env(),
        preexec_fn=preexec_fn,
    )
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 20
        record = None
        while record is None:
            assert time.monotonic() < deadline, "server did not log 'listening' in 20 s"
            line = proc.stderr.readline()
            assert line, f"server exited early: {proc.wait(timeout=5)}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"server wrote a line that is not JSON: {line!r}") from None
            if entry.get("event") == "listening":
                record = entry
        yield proc, record
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()


def http_get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code

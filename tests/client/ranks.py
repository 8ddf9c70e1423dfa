"""Run a worker module as N rank processes and collect their JSON lines; nothing outlives it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from testbed.procs import REPO, python_env


@dataclass
class RankResult:
    rank: int
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise AssertionError(f"rank {self.rank} printed no result; stderr:\n{self.stderr}")
        return json.loads(lines[-1])


def run_ranks(
    argv_for: Callable[[int], Sequence[str]],
    world_size: int,
    *,
    timeout: float = 120.0,
    prefix_for: Callable[[int], Sequence[str]] | None = None,
) -> list[RankResult]:
    """Start ``world_size`` processes (``[*prefix, python, *argv_for(rank)]``), wait for all.

    ``prefix_for(rank)`` may wrap a rank's command (e.g. ``ip netns exec NS``).

    Every process is killed if the deadline passes or anything goes wrong.
    """
    procs: list[subprocess.Popen] = []
    try:
        for rank in range(world_size):
            procs.append(
                subprocess.Popen(
                    [*(prefix_for(rank) if prefix_for else ()), sys.executable, *argv_for(rank)],
                    cwd=REPO,
                    env=python_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + timeout
        results = []
        for rank, proc in enumerate(procs):
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"rank {rank} of {world_size} did not finish within {timeout} s"
                ) from None
            results.append(RankResult(rank, proc.returncode, out, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

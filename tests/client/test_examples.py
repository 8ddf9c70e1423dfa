"""The client examples run as documented."""

from __future__ import annotations

import subprocess
import sys

from tests.client.ranks import REPO, python_env, run_ranks


def test_allreduce_example_local() -> None:
    done = subprocess.run(
        [sys.executable, "examples/allreduce.py", "--local", "3"],
        cwd=REPO,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "3 ranks: every element is 3 (expected 3)" in done.stdout


def test_hello_pair_example(server) -> None:
    names = ["alice", "bob"]
    results = run_ranks(
        lambda i: ["examples/hello_pair.py", server.address, names[i]], 2, timeout=60
    )
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert "hello from bob" in results[0].stdout
    assert "hello from alice" in results[1].stdout


def test_hello_pair_with_a_bad_address_says_so_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "examples/hello_pair.py", "127.0.0.1:abc", "alice"],
        cwd=REPO,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "port 'abc' is not a number" in done.stderr and "Traceback" not in done.stderr

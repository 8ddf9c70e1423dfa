"""Every collective against numpy references, ranks as separate processes on loopback.

One spawn of N processes per world size runs all checks for that size (every root,
numbers, small and large arrays, non-commutative operators, tagged point-to-point);
see collective_worker.py.
"""

from __future__ import annotations

import os

import pytest

from tests.client.ranks import run_ranks

WORLD_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13]


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_all_collectives_match_numpy(server, world_size: int) -> None:
    comm_name = f"coll-{os.getpid()}-{world_size}"
    results = run_ranks(
        lambda rank: [
            "-m",
            "tests.client.collective_worker",
            server.host,
            str(server.port),
            str(rank),
            str(world_size),
            comm_name,
        ],
        world_size,
        timeout=180,
    )
    failures = [f"rank {r.rank}: {r.stderr[-1500:]}" for r in results if r.returncode]
    assert not failures, "\n".join(failures)
    reports = [r.json() for r in results]
    assert [rep["rank"] for rep in reports] == list(range(world_size))
    # 5 checks per root on every rank, 3 more where the rank is root, 24 root-independent
    assert all(rep["checks"] == 5 * world_size + 27 for rep in reports), reports

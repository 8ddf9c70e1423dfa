"""One rank of the collective checks: run as ``python -m tests.client.collective_worker``.

Arguments: HOST PORT RANK WORLD_SIZE COMM_NAME. Every rank runs every check for its
world size (all roots, numbers, arrays small and large, non-commutative operators) and
compares with references computed locally with numpy; it prints one JSON line
``{"rank": r, "checks": n}`` and exits 0, or prints a traceback and exits 1.
"""

from __future__ import annotations

import functools
import json
import sys

import numpy as np

from fmi_client import Communicator

LARGE = 30_011  # float64 elements: 240 KB, above the reduce-scatter threshold; odd on purpose


def value(rank: int) -> float:
    return rank * 1.5 + 1


def matrix(rank: int) -> np.ndarray:
    """Matrices that do not commute, so an out-of-order fold gives a different product."""
    return np.array([[1, rank], [rank % 3, 1]], dtype=np.int64)


def array(rank: int, size: int = 7) -> np.ndarray:
    return np.arange(size, dtype=np.float64) * (rank + 1) + rank


def concat(a: str, b: str) -> str:
    return a + b


def main() -> int:
    host, port, rank_s, size_s, comm_name = sys.argv[1:6]
    rank, n = int(rank_s), int(size_s)
    ranks = range(n)
    checks = 0

    def check(condition: bool, what: str) -> None:
        nonlocal checks
        if not condition:
            raise AssertionError(f"rank {rank} of {n}: {what}")
        checks += 1

    with Communicator(rank, n, f"{host}:{port}", comm_name, timeout=60) as comm:
        comm.barrier()
        for root in ranks:
            got = comm.bcast({"root": root, "data": [root] * 3} if rank == root else None, root)
            check(got == {"root": root, "data": [root] * 3}, f"bcast dict root {root}: {got}")
            got = comm.bcast(array(root) if rank == root else None, root)
            check(np.array_equal(got, array(root)), f"bcast array root {root}")

            got = comm.gather((rank, str(rank)), root)
            if rank == root:
                check(got == [(r, str(r)) for r in ranks], f"gather root {root}: {got}")
            else:
                check(got is None, f"gather off root {root} returned {got!r}")

            objs = [{"to": r, "arr": array(r)} for r in ranks] if rank == root else None
            got = comm.scatter(objs, root)
            check(got["to"] == rank and np.array_equal(got["arr"], array(rank)), "scatter")

            got = comm.reduce(value(rank), "sum", root)
            expect = sum(value(r) for r in ranks)
            check(got == expect if rank == root else got is None, f"reduce sum root {root}")
            got = comm.reduce(array(rank), "max", root)
            if rank == root:
                check(np.array_equal(got, np.max([array(r) for r in ranks], axis=0)), "reduce max")
            got = comm.reduce(str(rank) + ",", concat, root, commutative=False)
            if rank == root:
                expect = "".join(f"{r}," for r in ranks)
                check(got == expect, f"reduce concat root {root}: {got!r}")
            got = comm.reduce(matrix(rank), np.matmul, root, commutative=False)
            if rank == root:
                expect = functools.reduce(np.matmul, [matrix(r) for r in ranks])
                check(np.array_equal(got, expect), f"reduce matmul root {root}")

        for op, fold in (("sum", np.sum), ("prod", np.prod), ("min", np.min), ("max", np.max)):
            got = comm.allreduce(rank + 2, op)
            check(got == fold([r + 2 for r in ranks]), f"allreduce {op} int: {got}")
            got = comm.allreduce(array(rank), op)
            check(np.allclose(got, fold([array(r) for r in ranks], axis=0)), f"allreduce {op}")
        mine = array(rank, LARGE)
        got = comm.allreduce(mine, "sum")
        check(np.allclose(got, np.sum([array(r, LARGE) for r in ranks], axis=0)), "large sum")
        check(np.array_equal(mine, array(rank, LARGE)), "allreduce left the input unchanged")
        into = np.full_like(mine, -1.0)
        got = comm.allreduce(mine, "sum", out=into)
        expect = np.sum([array(r, LARGE) for r in ranks], axis=0)
        check(got is into and np.allclose(got, expect), "large sum into out=")
        strided = array(rank, 2 * LARGE)[::2]  # not contiguous: sent from a contiguous copy
        got = comm.allreduce(strided, "max", out=strided)  # out aliases the input: ignored
        expect = np.max([array(r, 2 * LARGE)[::2] for r in ranks], axis=0)
        check(got is not strided and np.array_equal(got, expect), "strided, aliasing out=")
        check(np.array_equal(strided, array(rank, 2 * LARGE)[::2]), "aliased input unchanged")
        ints = np.arange(40_003, dtype=np.int32).reshape(-1, 1) * (rank + 1)
        got = comm.allreduce(ints, "max")
        check(got.shape == ints.shape and np.array_equal(got, ints // (rank + 1) * n), "large max")
        got = comm.allreduce(str(rank) + ",", concat, commutative=False)
        check(got == "".join(f"{r}," for r in ranks), f"allreduce concat: {got!r}")
        got = comm.allreduce(matrix(rank), np.matmul, commutative=False)
        check(np.array_equal(got, functools.reduce(np.matmul, [matrix(r) for r in ranks])), "mm")

        got = comm.allgather((rank, array(rank)))
        check([g[0] for g in got] == list(ranks), f"allgather order {got}")
        check(all(np.array_equal(g[1], array(g[0])) for g in got), "allgather arrays")

        got = comm.scan(value(rank), "sum")
        check(got == sum(value(r) for r in range(rank + 1)), f"scan sum {got}")
        got = comm.scan(array(rank), "max")
        check(np.array_equal(got, np.max([array(r) for r in range(rank + 1)], axis=0)), "scan")
        got = comm.scan(str(rank) + ",", concat, commutative=False)
        check(got == "".join(f"{r}," for r in range(rank + 1)), f"scan concat {got!r}")
        got = comm.scan(matrix(rank), np.matmul, commutative=False)
        expect = functools.reduce(np.matmul, [matrix(r) for r in range(rank + 1)])
        check(np.array_equal(got, expect), "scan matmul")

        # point to point, every pair connected up front; tags arrive out of order
        comm.connect_all()
        right, left = (rank + 1) % n, (rank - 1) % n
        comm.send(("five", rank), right, tag=5)
        comm.send(np.full(3, rank, dtype=np.int16), right, tag=7)
        got7 = comm.recv(left, tag=7)
        got5 = comm.recv(left, tag=5)
        check(got5 == ("five", left), f"tagged recv 5: {got5}")
        check(got7.dtype == np.int16 and np.array_equal(got7, np.full(3, left)), "recv 7")
        comm.barrier()
    print(json.dumps({"rank": rank, "checks": checks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

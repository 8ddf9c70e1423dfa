"""One rank of the mpi4py-surface checks: ``python -m tests.client.surface_worker HOST PORT
RANK WORLD_SIZE COMM_NAME``. Every rank checks its own results against numpy references
computed locally and prints ``{"rank": r, "checks": n}``, or a traceback and exits 1."""

from __future__ import annotations

import functools
import json
import sys

import numpy as np

from fmi_client import ANY_SOURCE, IN_PLACE, MAX, MAXLOC, SUM, Communicator, Request, Status


def data(rank: int, size: int = 5) -> np.ndarray:
    return (np.arange(size, dtype=np.float64) * (rank + 1)) % 7


def main() -> int:
    host, port, rank_s, size_s, comm_name = sys.argv[1:6]
    rank, n = int(rank_s), int(size_s)
    checks = 0

    def check(condition: bool, what: str) -> None:
        nonlocal checks
        if not condition:
            raise AssertionError(f"rank {rank} of {n}: {what}")
        checks += 1

    with Communicator(rank, n, f"{host}:{port}", comm_name, timeout=60, op_timeout=60) as c:
        right, left = (rank + 1) % n, (rank - 1) % n
        c.send(rank, 0, tag=2)
        if rank == 0:
            got = set()
            for _ in range(n):
                status = Status()
                value = c.recv(ANY_SOURCE, 2, status)
                check(value == status.source, f"any source: {value} from {status.source}")
                got.add(value)
            check(got == set(range(n)), f"any source got {got}")
        big = data(rank, 200_001)
        check(np.array_equal(c.sendrecv(big, right, 3, left, 3), data(left, 200_001)), "ring")
        reqs = [c.irecv(left, 4), c.isend(big, right, 4)]
        check(np.array_equal(Request.waitall(reqs)[0], data(left, 200_001)), "requests")
        check(c.alltoall([(rank, j) for j in range(n)]) == [(s, rank) for s in range(n)], "a2a")
        check(c.exscan(rank + 1) == (None if rank == 0 else rank * (rank + 1) // 2), "exscan")
        check(c.reduce_scatter([j for j in range(n)], op=SUM) == rank * n, "reduce_scatter")
        check(
            c.allreduce((rank % 3, rank), MAXLOC) == (min(n - 1, 2), 2 if n > 2 else n - 1),
            "maxloc",
        )
        sub = c.Split(rank % 2, key=rank)
        assert sub is not None
        with sub:
            members = [r for r in range(n) if r % 2 == rank % 2]
            check(sub.allgather(rank) == members, "split allgather")
            total = np.empty(3)
            sub.Allreduce(np.full(3, float(rank)), total)
            check(np.all(total == sum(members)), "split Allreduce")
        every = [data(s) for s in range(n)]
        for root in range(n):
            buf = data(root) if rank == root else np.empty(5)
            c.Bcast(buf, root)
            check(np.array_equal(buf, data(root)), f"Bcast root {root}")
            into = np.empty(5) if rank == root else None
            c.Reduce(data(rank), into, op=MAX, root=root)
            if rank == root:
                check(np.array_equal(into, functools.reduce(np.maximum, every)), "Reduce")
        inplace = data(rank, 50_000)
        c.Allreduce(IN_PLACE, inplace)
        check(np.allclose(inplace, sum(data(s, 50_000) for s in range(n))), "Allreduce")
        gathered = np.empty(5 * n)
        c.Allgather(data(rank), gathered)
        check(np.array_equal(gathered, np.concatenate(every)), "Allgather")
        swapped = np.empty(5 * n)
        c.Alltoall(data(rank, 5 * n), swapped)
        blocks = [data(s, 5 * n)[5 * rank : 5 * rank + 5] for s in range(n)]
        check(np.array_equal(swapped, np.concatenate(blocks)), "Alltoall")
        rs = np.empty(5)
        c.Reduce_scatter(data(rank, 5 * n), rs)
        check(np.allclose(rs, sum(blocks)), "Reduce_scatter")
        got = np.empty(5)
        c.Sendrecv(data(rank), right, 6, got, left, 6)
        check(np.array_equal(got, data(left)), "Sendrecv")
        try:
            c.Allreduce(np.zeros(3), np.zeros(4))
        except ValueError as exc:
            check("recvbuf holds 4" in str(exc), f"mismatch message: {exc}")
        c.barrier()  # the refused call broke nothing
    print(json.dumps({"rank": rank, "checks": checks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

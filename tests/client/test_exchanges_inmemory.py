"""alltoall, exscan, reduce_scatter and the buffer collectives (into preallocated arrays)
over the in-memory transport, at world sizes 1-9 and 11, every root, against numpy."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fmi_client import exchanges
from fmi_client.ops import MAX, MAXLOC, MIN, SUM, Op, as_op
from fmi_client.p2p import split_groups
from tests.client.inmemory import InMemoryTransport, run_world

WORLD_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]


def concat(a: str, b: str) -> str:
    return a + b


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_alltoall_exscan_reduce_scatter(n: int) -> None:
    def rank_main(t: InMemoryTransport) -> tuple:
        r = t.rank
        got = exchanges.alltoall(t, [(r, j) for j in range(n)])
        ex = exchanges.exscan(t, str(r), Op.create(concat))
        ex_sum = exchanges.exscan(t, np.arange(3) + r, SUM)
        rs = exchanges.reduce_scatter(t, [f"{r}>{j}," for j in range(n)], Op.create(concat))
        return got, ex, ex_sum, rs

    for r, (got, ex, ex_sum, rs) in enumerate(run_world(n, rank_main)):
        assert got == [(s, r) for s in range(n)]
        assert ex == (None if r == 0 else "".join(str(s) for s in range(r)))
        if r == 0:
            assert ex_sum is None
        else:
            np.testing.assert_array_equal(ex_sum, sum(np.arange(3) + s for s in range(r)))
        assert rs == "".join(f"{s}>{r}," for s in range(n))


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_maxloc_minloc_through_exscan_and_reduce_scatter(n: int) -> None:
    values = [(n - abs(2 * r - n)) % 4 for r in range(n)]  # ties on purpose

    def rank_main(t: InMemoryTransport) -> tuple:
        pair = (values[t.rank], t.rank)
        blocks = [pair] * n
        return (
            exchanges.reduce_scatter(t, blocks, MAXLOC),
            exchanges.reduce_scatter(t, blocks, as_op("minloc")),
        )

    best = max(values)
    worst = min(values)
    for hi, lo in run_world(n, rank_main):
        assert hi == (best, values.index(best))
        assert lo == (worst, values.index(worst))


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_buffer_collectives_fill_the_callers_arrays(n: int) -> None:
    count = 5

    def data(r: int) -> np.ndarray:
        return (np.arange(n * count, dtype=np.float64) * (r + 1)) % 11

    def rank_main(t: InMemoryTransport) -> dict:
        r = t.rank
        out = {}
        for root in range(n):
            buf = data(root) if r == root else np.zeros(n * count)
            exchanges.bcast_into(t, buf, root)
            out[f"bcast{root}"] = buf
        gathered = np.full(n * 3, -1, dtype=np.int32)
        exchanges.allgather_into(t, np.arange(3, dtype=np.int32) + 10 * r, gathered)
        out["allgather"] = gathered
        swapped = np.empty(n * count)
        exchanges.alltoall_into(t, data(r), swapped)
        out["alltoall"] = swapped
        counts = [(i % 3) + 1 for i in range(n)]
        send = np.arange(sum(counts), dtype=np.float64) + r
        for op in (SUM, MAX, MIN, Op.create(np.add)):
            into = np.empty(counts[r])
            exchanges.reduce_scatter_into(t, send, into, counts, op, np.empty((n - 1) * counts[r]))
            out[f"rs-{op!r}"] = into
        return out

    results = run_world(n, rank_main)
    counts = [(i % 3) + 1 for i in range(n)]
    starts = [sum(counts[:i]) for i in range(n + 1)]
    for r, out in enumerate(results):
        for root in range(n):
            np.testing.assert_array_equal(out[f"bcast{root}"], data(root))
        expect = np.concatenate([np.arange(3, dtype=np.int32) + 10 * s for s in range(n)])
        np.testing.assert_array_equal(out["allgather"], expect)
        expect = np.concatenate([data(s)[r * count : (r + 1) * count] for s in range(n)])
        np.testing.assert_array_equal(out["alltoall"], expect)
        sends = [np.arange(sum(counts), dtype=np.float64) + s for s in range(n)]
        mine = [x[starts[r] : starts[r + 1]] for x in sends]
        np.testing.assert_array_equal(out["rs-SUM"], functools.reduce(np.add, mine))
        np.testing.assert_array_equal(out["rs-MAX"], functools.reduce(np.maximum, mine))
        np.testing.assert_array_equal(out["rs-MIN"], functools.reduce(np.minimum, mine))
        assert [k for k in out if k.startswith("rs-Op.create")], out.keys()
        created = next(v for k, v in out.items() if k.startswith("rs-Op.create"))
        np.testing.assert_array_equal(created, functools.reduce(np.add, mine))


def test_a_peer_with_another_size_is_refused_by_name_at_the_receiver() -> None:
    def rank_main(t: InMemoryTransport) -> None:
        buf = np.zeros(4 if t.rank == 0 else 5)
        exchanges.bcast_into(t, buf, 0)

    with pytest.raises(ValueError, match=r"Bcast: rank 0 sent 4 x float64 .* holds 5 x float64"):
        run_world(2, rank_main)


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_split_groups_order_by_key_then_rank(n: int) -> None:
    keys = [(r % 3, (n - r) // 2) for r in range(n)]
    for r in range(n):
        new_rank, group = split_groups(keys, r)
        color = r % 3
        expect = sorted((k, s) for s, (c, k) in enumerate(keys) if c == color)
        assert group == [s for _, s in expect]
        assert group[new_rank] == r


def test_maxloc_minloc_and_op_create_as_mpi4py_spells_them() -> None:
    assert MAXLOC((3, 5), (3, 2)) == (3, 2)  # a tie: the lower index
    assert MAXLOC((1, 0), (4, 9)) == (4, 9)
    assert as_op("minloc")((2.5, 7), (2.5, 1)) == (2.5, 1)
    assert as_op("minloc")((-1, 7), (2.5, 1)) == (-1, 7)
    assert not MAXLOC.elementwise and MAXLOC.commute
    made = Op.Create(concat, commute=False)
    assert made("a", "b") == "ab" and not made.commute
    with pytest.raises(ValueError, match="MAXLOC, MINLOC"):
        as_op("median")

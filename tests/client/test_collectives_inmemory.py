"""Every collective algorithm over the in-memory transport, at every world size and root,
against plain Python / numpy references (the algorithms are the ones the Communicator
runs over sockets; tests/client/test_collectives.py runs them over real processes)."""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
import pytest

from fmi_client import collectives
from fmi_client.allreduce import LARGE_ALLREDUCE, Scratch
from fmi_client.ops import BAND, BOR, LAND, LOR, MAX, MIN, PROD, SUM, Op, as_op
from tests.client.inmemory import InMemoryTransport, run_world

WORLD_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]
#: int64 elements of an array that takes the reduce-scatter + allgather path (odd count,
#: so the halves are uneven)
LARGE = LARGE_ALLREDUCE // 8 + 37

NAMED_OPS = [SUM, PROD, MIN, MAX, LAND, LOR, BAND, BOR]
UFUNC = {
    "sum": np.add,
    "prod": np.multiply,
    "min": np.minimum,
    "max": np.maximum,
    "land": np.logical_and,
    "lor": np.logical_or,
    "band": np.bitwise_and,
    "bor": np.bitwise_or,
}


def number(rank: int) -> int:
    """A small int per rank: products stay small, some are 0 (for LAND/LOR)."""
    return (rank * 7 + 3) % 5


def small_array(rank: int) -> np.ndarray:
    return (np.arange(6, dtype=np.int64).reshape(2, 3) + rank) % 4


def large_array(rank: int) -> np.ndarray:
    return (np.arange(LARGE, dtype=np.int64) * (rank + 3)) % 7


def python_reference(op: Op, values: list[Any]) -> Any:
    return functools.reduce(op.function, values)


def array_reference(op: Op, arrays: list[np.ndarray]) -> np.ndarray:
    assert op.name is not None
    folded = functools.reduce(UFUNC[op.name], arrays)
    return np.asarray(folded).astype(arrays[0].dtype)


def concat(a: str, b: str) -> str:
    """Associative, not commutative: the order of the fold shows in the result."""
    return a + b


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b


def matrix(rank: int) -> np.ndarray:
    return np.array([[1, rank + 1], [0, 1]], dtype=np.int64) + np.eye(2, dtype=np.int64) * rank


def test_the_in_memory_transport_satisfies_the_protocol() -> None:
    from fmi_client.transport import Transport

    def check(t: InMemoryTransport) -> int:
        transport: Transport = t  # what mypy checks; at runtime: the attributes exist
        return transport.size - transport.rank

    assert run_world(3, check) == [3, 2, 1]


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_barrier_returns_only_after_every_rank_arrived(size: int) -> None:
    arrived: list[int] = []
    lock = threading.Lock()

    def rank_main(t: InMemoryTransport) -> int:
        for _ in range(3):
            with lock:
                arrived.append(t.rank)
            collectives.barrier(t)
            with lock:
                seen = len(arrived)
            collectives.barrier(t)
        return seen

    seen = run_world(size, rank_main)
    # after the n-th barrier every rank has arrived n times (and none a further time yet)
    assert seen == [3 * size] * size


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_bcast_from_every_root(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = []
        for root in range(size):
            mine = {"root": root, "items": list(range(root))} if t.rank == root else None
            got.append(collectives.bcast(t, mine, root))
            array = small_array(root) if t.rank == root else None
            got.append(collectives.bcast(t, array, root).tolist())
        return got

    expected = [
        value
        for root in range(size)
        for value in ({"root": root, "items": list(range(root))}, small_array(root).tolist())
    ]
    assert run_world(size, rank_main) == [expected] * size


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_gather_and_allgather(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got: list[Any] = [
            collectives.gather(t, (t.rank, "x" * t.rank), root) for root in range(size)
        ]
        got.append(collectives.allgather(t, t.rank * 11))
        arrays = collectives.allgather(t, small_array(t.rank))
        got.append([a.tolist() for a in arrays])
        return got

    items = [(r, "x" * r) for r in range(size)]
    results = run_world(size, rank_main)
    for rank, got in enumerate(results):
        assert got[:size] == [items if root == rank else None for root in range(size)]
        assert got[size] == [r * 11 for r in range(size)]
        assert got[size + 1] == [small_array(r).tolist() for r in range(size)]


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_scatter_from_every_root(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        return [
            collectives.scatter(
                t, [f"{root}->{i}" for i in range(size)] if t.rank == root else None, root
            )
            for root in range(size)
        ]

    results = run_world(size, rank_main)
    assert results == [[f"{root}->{rank}" for root in range(size)] for rank in range(size)]


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_reduce_every_named_op_to_every_root(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = []
        for root in range(size):
            for op in NAMED_OPS:
                got.append(collectives.reduce(t, number(t.rank), op, root))
                array = collectives.reduce(t, small_array(t.rank), op, root)
                got.append(None if array is None else (array.dtype.str, array.tolist()))
        return got

    numbers = [number(r) for r in range(size)]
    arrays = [small_array(r) for r in range(size)]
    for rank, got in enumerate(run_world(size, rank_main)):
        expected = []
        for root in range(size):
            for op in NAMED_OPS:
                if rank == root:
                    ref = array_reference(op, arrays)
                    expected += [python_reference(op, numbers), (ref.dtype.str, ref.tolist())]
                else:
                    expected += [None, None]
        assert got == expected, (rank, size)


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_reduce_folds_non_commutative_ops_in_rank_order_at_every_root(size: int) -> None:
    declared = Op.create(concat)  # commute=False by default, as in mpi4py
    plain = as_op(concat)  # a plain callable: the commutative= argument decides

    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = []
        for root in range(size):
            got.append(collectives.reduce(t, f"{t.rank},", declared, root))
            got.append(collectives.reduce(t, f"{t.rank},", plain, root, commutative=False))
            product = collectives.reduce(t, matrix(t.rank), Op.create(matmul), root)
            got.append(None if product is None else product.tolist())
        return got

    chain = python_reference(declared, [f"{r}," for r in range(size)])
    product = functools.reduce(matmul, [matrix(r) for r in range(size)]).tolist()
    for rank, got in enumerate(run_world(size, rank_main)):
        expected = []
        for root in range(size):
            expected += [chain, chain, product] if rank == root else [None, None, None]
        assert got == expected


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_small_allreduce_every_op_with_and_without_out(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = []
        for op in NAMED_OPS:
            got.append(collectives.allreduce(t, number(t.rank), op))
            mine = small_array(t.rank)
            result = collectives.allreduce(t, mine, op)
            assert result is not mine and not np.shares_memory(result, mine)
            out = np.full_like(mine, -1)
            into = collectives.allreduce(t, mine, op, out=out)
            assert into is out
            assert np.array_equal(mine, small_array(t.rank)), "the input was changed"
            got.append((result.dtype.str, result.tolist(), out.tolist()))
        got.append(collectives.allreduce(t, f"{t.rank},", Op.create(concat)))
        got.append(collectives.allreduce(t, matrix(t.rank), Op.create(matmul)).tolist())
        got.append(collectives.allreduce(t, [t.rank], lambda a, b: a + b))
        return got

    numbers = [number(r) for r in range(size)]
    arrays = [small_array(r) for r in range(size)]
    expected = []
    for op in NAMED_OPS:
        ref = array_reference(op, arrays)
        expected += [python_reference(op, numbers), (ref.dtype.str, ref.tolist(), ref.tolist())]
    expected.append(python_reference(Op.create(concat), [f"{r}," for r in range(size)]))
    expected.append(functools.reduce(matmul, [matrix(r) for r in range(size)]).tolist())
    expected.append(list(range(size)))
    assert run_world(size, rank_main) == [expected] * size


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_large_allreduce_reduce_scatter_allgather(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = []
        scratch = Scratch()
        for op in (SUM, MIN, MAX, BOR):
            mine = large_array(t.rank)
            result = collectives.allreduce(t, mine, op, scratch=scratch)
            out = np.empty_like(mine)
            into = collectives.allreduce(t, mine, op, out=out, scratch=scratch)
            assert into is out
            assert np.array_equal(mine, large_array(t.rank)), "the input was changed"
            got.append((result.tolist(), out.tolist()))
        # shaped float input keeps its shape (values exact: small integers)
        shaped = large_array(t.rank)[: 2 * (LARGE // 2)].astype(np.float64).reshape(2, -1)
        got.append(collectives.allreduce(t, shaped, "sum", scratch=scratch).tolist())
        # the large path ran and kept its receive buffer (on every rank that halves: not
        # on the even ranks below 2 * rem of a non-power-of-two world, which hand over)
        got.append(scratch._buf is not None)
        return got

    arrays = [large_array(r) for r in range(size)]
    expected = []
    for op in (SUM, MIN, MAX, BOR):
        ref = array_reference(op, arrays).tolist()
        expected.append((ref, ref))
    halves = [a[: 2 * (LARGE // 2)].astype(np.float64).reshape(2, -1) for a in arrays]
    expected.append(functools.reduce(np.add, halves).tolist())
    rem = size - (1 << (size.bit_length() - 1))
    for rank, got in enumerate(run_world(size, rank_main)):
        halves = size > 1 and not (rank < 2 * rem and rank % 2 == 0)
        assert got == [*expected, halves], rank


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_scan_prefixes_in_rank_order(size: int) -> None:
    def rank_main(t: InMemoryTransport) -> list[Any]:
        got = [collectives.scan(t, number(t.rank), op) for op in NAMED_OPS]
        mine = small_array(t.rank)
        prefix = collectives.scan(t, mine, SUM)
        assert prefix is not mine
        got.append(prefix.tolist())
        got.append(collectives.scan(t, f"{t.rank},", Op.create(concat)))
        return got

    for rank, got in enumerate(run_world(size, rank_main)):
        numbers = [number(r) for r in range(rank + 1)]
        expected = [python_reference(op, numbers) for op in NAMED_OPS]
        expected.append(sum(small_array(r) for r in range(rank + 1)).tolist())
        expected.append(python_reference(Op.create(concat), [f"{r}," for r in range(rank + 1)]))
        assert got == expected, rank


def test_an_error_in_one_rank_reaches_the_caller_and_no_rank_hangs() -> None:
    def rank_main(t: InMemoryTransport) -> Any:
        op = Op.create(lambda a, b: 1 / 0 if t.rank == 1 else a)
        return collectives.allreduce(t, t.rank, op)

    with pytest.raises(ZeroDivisionError):
        run_world(4, rank_main)

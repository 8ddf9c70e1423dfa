"""Reduction operators as objects (mpi4py style), and the strings and callables that
keep working wherever an op is accepted: Communicator, collectives functions, compat."""

from __future__ import annotations

import operator
import threading
from typing import Any

import numpy as np
import pytest

import fmi_client.compat as fmi
from fmi_client import Communicator, ops
from fmi_client.ops import BAND, BOR, LAND, LOR, MAX, MIN, PROD, SUM, Op, as_op


def test_named_ops_fold_python_values() -> None:
    assert [op(6, 3) for op in (SUM, PROD, MIN, MAX, BAND, BOR)] == [9, 18, 3, 6, 2, 7]
    assert SUM("ab", "cd") == "abcd"
    assert (LAND(2, 0), LAND(2, 3), LOR(0, 0), LOR(0, 5)) == (False, True, False, True)


def test_named_ops_reduce_arrays_with_ufuncs_in_place() -> None:
    left = np.array([1, 5, 3], dtype=np.int32)
    right = np.array([4, 2, 3], dtype=np.int32)
    out = np.zeros(3, dtype=np.int32)
    assert SUM(left, right, out=out) is out
    assert out.tolist() == [5, 7, 6]
    assert MAX(left, right).tolist() == [4, 5, 3]
    assert MIN(left, 2).tolist() == [1, 2, 2]  # an array and a scalar broadcast
    # logical ops keep the operands' dtype (MPI's LAND/LOR on ints), not bool
    both = LAND(np.array([0, 1, 2], dtype=np.int64), np.array([1, 1, 0], dtype=np.int64))
    assert (both.dtype, both.tolist()) == (np.dtype(np.int64), [0, 1, 0])
    either = LOR(np.array([0.0, 0.0, 2.0]), np.array([1.0, 0.0, 0.0]))
    assert (either.dtype, either.tolist()) == (np.dtype(np.float64), [1.0, 0.0, 1.0])


def test_strings_and_callables_become_ops() -> None:
    assert [as_op(name) for name in ops.NAMED] == [SUM, PROD, MIN, MAX, LAND, LOR, BAND, BOR]
    assert as_op(SUM) is SUM
    custom = as_op(operator.sub)
    assert (custom(7, 2), custom.commute, custom.elementwise) == (5, True, False)
    assert all(op.elementwise and op.commute for op in ops.NAMED.values())


def test_op_create_is_not_commutative_unless_told() -> None:
    assert Op.create(operator.sub).commute is False
    assert Op.create(operator.add, commute=True).commute is True
    assert Op.create(operator.add).elementwise is False  # never applied to slices
    assert repr(SUM) == "SUM"
    assert "commute=False" in repr(Op.create(operator.sub))


@pytest.mark.parametrize("bad", ["SUM", "avg", 3, None])
def test_unknown_ops_are_refused_with_the_choices(bad: Any) -> None:
    with pytest.raises(ValueError, match="'sum', 'prod', 'min', 'max'") as caught:
        as_op(bad)
    assert repr(bad) in str(caught.value)
    with pytest.raises(TypeError, match="callable"):
        Op(bad, commute=True)


def test_a_communicator_of_one_takes_every_kind_of_op() -> None:
    with Communicator(0, 1, "127.0.0.1:9", "ops-single") as comm:  # never connects
        assert comm.allreduce(5, SUM) == 5
        assert comm.reduce(5, "max") == 5
        assert comm.scan(5, operator.mul) == 5
        with pytest.raises(ValueError, match="op must be"):
            comm.allreduce(5, "average")


def test_op_objects_over_real_connections(server) -> None:
    """Two ranks in threads, paired through the server: the Communicator hands Op objects,
    strings and callables to the collectives over its sockets."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            with Communicator(
                rank, 2, f"127.0.0.1:{server.port}", f"ops-{id(results)}", timeout=30
            ) as comm:
                results[rank] = [
                    comm.allreduce(rank + 2, PROD),
                    comm.allreduce(np.arange(3) + rank, MAX).tolist(),
                    comm.reduce(str(rank), Op.create(operator.add), root=1),
                    comm.scan(rank + 1, "sum"),
                    comm.allreduce([rank], lambda a, b: a + b),
                ]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results == [
        [6, [1, 2, 3], None, 1, [0, 1]],
        [6, [1, 2, 3], "01", 3, [0, 1]],
    ]


def test_compat_func_takes_fmi_ops_and_op_objects() -> None:
    ints = fmi.types(fmi.datatypes.int)
    lists = fmi.types(fmi.datatypes.int_list, 2)
    assert fmi.func(fmi.op.max).for_type(ints)(3, 4) == 4
    assert fmi.func(fmi.op.sum).for_type(lists)([1, 2], [3, 4]) == [4, 6]
    assert fmi.func(fmi.op.custom, operator.sub).for_type(ints)(9, 4) == 5
    assert fmi.func(MIN).for_type(lists)([1, 5], [3, 4]) == [1, 4]
    declared = fmi.func(Op.create(operator.sub))
    assert (declared.commutative, declared.for_type(ints)(9, 4)) == (False, 5)
    assert fmi.func(SUM).commutative is True
    with pytest.raises(ValueError, match="needs the function"):
        fmi.func(fmi.op.custom)

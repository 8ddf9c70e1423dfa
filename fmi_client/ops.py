"""Reduction operators: "sum", "prod", "min", "max" or any callable f(a, b).

Named operators reduce numpy arrays element-wise with ufuncs (in place where the
Communicator owns the buffer) and other objects with Python's operators. Only named
operators are known to be element-wise, so only they may be applied to slices of an
array (the bandwidth-optimal allreduce relies on that).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from fmi_client.framing import is_array, np

Op = str | Callable[[Any, Any], Any]

_PYTHON = {"sum": operator.add, "prod": operator.mul, "min": min, "max": max}
_UFUNC_NAMES = {"sum": "add", "prod": "multiply", "min": "minimum", "max": "maximum"}


def check(op: Op) -> Op:
    if callable(op):
        return op
    if op in _PYTHON:
        return op
    raise ValueError(f"op must be 'sum', 'prod', 'min', 'max' or a callable f(a, b), not {op!r}")


def is_named(op: Op) -> bool:
    return isinstance(op, str)


def combine(op: Op, left: Any, right: Any, *, out: Any = None) -> Any:
    """``left op right`` (left holds the lower ranks). ``out`` may receive an array result."""
    if isinstance(op, str):
        if is_array(left) or is_array(right):
            ufunc = getattr(np, _UFUNC_NAMES[op])
            if out is not None:
                return ufunc(left, right, out=out)
            return ufunc(left, right)
        return _PYTHON[op](left, right)
    return op(left, right)

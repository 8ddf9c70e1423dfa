"""Reduction operators as objects, as mpi4py has them: ``SUM``, ``PROD``, ``MIN``, ``MAX``,
``LAND``, ``LOR``, ``BAND``, ``BOR``, ``MAXLOC``, ``MINLOC`` and ``Op.create(f, commute=...)``.

Wherever an op is accepted, the strings "sum", "prod", "min", "max" (and "land", "lor",
"band", "bor") and any plain callable ``f(a, b)`` work too (``as_op`` turns them into an
Op). Named operators reduce numpy arrays element-wise with ufuncs (in place when given
``out``) and other objects with Python's operators. Only named operators are known to be
element-wise, so only they may be applied to slices of an array (the bandwidth-optimal
allreduce relies on that).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from fmi_client.framing import is_array, np

#: A binary function on two values (left holds the lower ranks).
Binary = Callable[[Any, Any], Any]
#: A binary function on numpy arrays with an optional result array (a ufunc's signature).
ArrayBinary = Callable[..., Any]


class Op:
    """A reduction operator: ``op(left, right)`` folds two values, left from lower ranks.

    ``commute`` says whether ``f(a, b) == f(b, a)``: a reduce of a non-commutative op
    to a root other than 0 folds at rank 0 first (where tree order is rank order).
    ``elementwise`` ops (the named ones) apply numpy ufuncs and may fold slices.
    """

    __slots__ = ("_array", "commute", "elementwise", "function", "name")

    def __init__(
        self,
        function: Binary,
        *,
        commute: bool,
        name: str | None = None,
        array_function: ArrayBinary | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"an op needs a callable f(a, b), not {function!r}")
        self.function = function
        self.commute = bool(commute)
        self.name = name
        self._array = array_function
        #: Whether arrays reduce element by element (a ufunc), so slices may be folded.
        self.elementwise = array_function is not None

    @classmethod
    def create(cls, function: Binary, commute: bool = False) -> Op:
        """A user operator ``function(a, b)`` (mpi4py's ``Op.Create``; not commutative
        unless ``commute=True``). It is applied to whole values, never to slices."""
        return cls(function, commute=commute)

    #: mpi4py's spelling
    Create = create

    def __call__(self, left: Any, right: Any, *, out: Any = None) -> Any:
        """``left op right``; an array result of a named op lands in ``out`` if given."""
        array = self._array
        if array is not None and (is_array(left) or is_array(right)):
            # out=None costs a ufunc noticeably more than no out at all
            return array(left, right) if out is None else array(left, right, out=out)
        return self.function(left, right)

    def __repr__(self) -> str:
        if self.name is not None:
            return self.name.upper()
        return f"Op.create({self.function!r}, commute={self.commute})"


def _ufunc(name: str) -> ArrayBinary | None:
    return None if np is None else getattr(np, name)  # type: ignore[no-any-return]


def _logical(name: str) -> ArrayBinary | None:
    """A logical ufunc whose result keeps the operands' dtype (as MPI's LAND/LOR do)."""
    ufunc = _ufunc(name)
    if ufunc is None:
        return None

    def apply(left: Any, right: Any, *, out: Any = None) -> Any:
        if out is None:
            out = np.empty(np.broadcast(left, right).shape, np.result_type(left, right))
        return ufunc(left, right, out=out)

    return apply


def _land(a: Any, b: Any) -> bool:
    """A bool, not ``a and b`` (which returns an operand: not commutative)."""
    return bool(a) and bool(b)


def _lor(a: Any, b: Any) -> bool:
    return bool(a) or bool(b)


def _maxloc(a: Any, b: Any) -> tuple[Any, Any]:
    """MPI's MAXLOC on ``(value, index)`` pairs: the larger value; on a tie the lower index."""
    (va, ia), (vb, ib) = a, b
    if va > vb:
        return (va, ia)
    if vb > va:
        return (vb, ib)
    return (va, min(ia, ib))


def _minloc(a: Any, b: Any) -> tuple[Any, Any]:
    """MPI's MINLOC on ``(value, index)`` pairs: the smaller value; on a tie the lower index."""
    (va, ia), (vb, ib) = a, b
    if va < vb:
        return (va, ia)
    if vb < va:
        return (vb, ib)
    return (va, min(ia, ib))


SUM = Op(operator.add, commute=True, name="sum", array_function=_ufunc("add"))
PROD = Op(operator.mul, commute=True, name="prod", array_function=_ufunc("multiply"))
MIN = Op(min, commute=True, name="min", array_function=_ufunc("minimum"))
MAX = Op(max, commute=True, name="max", array_function=_ufunc("maximum"))
LAND = Op(_land, commute=True, name="land", array_function=_logical("logical_and"))
LOR = Op(_lor, commute=True, name="lor", array_function=_logical("logical_or"))
BAND = Op(operator.and_, commute=True, name="band", array_function=_ufunc("bitwise_and"))
BOR = Op(operator.or_, commute=True, name="bor", array_function=_ufunc("bitwise_or"))
#: On ``(value, index)`` pairs (as mpi4py's object calls take them), never element-wise.
MAXLOC = Op(_maxloc, commute=True, name="maxloc")
MINLOC = Op(_minloc, commute=True, name="minloc")

#: The named ops by the strings that stand for them.
NAMED: dict[str, Op] = {
    "sum": SUM,
    "prod": PROD,
    "min": MIN,
    "max": MAX,
    "land": LAND,
    "lor": LOR,
    "band": BAND,
    "bor": BOR,
}
#: The pair ops by their strings (not element-wise, so kept apart from NAMED).
LOC: dict[str, Op] = {"maxloc": MAXLOC, "minloc": MINLOC}

#: What the Communicator accepts as an op.
OpLike = Op | str | Binary


def as_op(op: OpLike) -> Op:
    """``op`` as an Op: named ops by their string, plain callables as commutative user ops
    (whether a reduce treats them as commutative is then the caller's ``commutative=``)."""
    if isinstance(op, Op):
        return op
    if isinstance(op, str):
        named = NAMED.get(op) or LOC.get(op)
        if named is not None:
            return named
    elif callable(op):
        return Op(op, commute=True)
    raise ValueError(
        "op must be an fmi_client.ops.Op (SUM, PROD, MIN, MAX, LAND, LOR, BAND, BOR, MAXLOC, "
        f"MINLOC or Op.create(f)), one of {', '.join(map(repr, [*NAMED, *LOC]))} or a callable "
        f"f(a, b), not {op!r}"
    )


__all__ = [
    "BAND",
    "BOR",
    "LAND",
    "LOC",
    "LOR",
    "MAX",
    "MAXLOC",
    "MIN",
    "MINLOC",
    "NAMED",
    "PROD",
    "SUM",
    "Op",
    "OpLike",
    "as_op",
]

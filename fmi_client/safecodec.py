"""A safe encoding for plain data: decoding never runs code and never over-allocates.

For peers that are not authenticated (or that opted out of pickle): None, bool, int,
float, str, bytes, list, tuple, dict of these, and numpy arrays and scalars of plain
dtypes (bool, ints, floats, complex; numpy optional). Every length is checked against
the bytes actually present before anything is allocated, nesting is bounded, and a frame
header announcing more than ``max_message_bytes`` fails before its payload is read. ::

    frame:  magic "FSC" version:u8=1 length:u64 | value
    value:  tag:u8 body    (tags below; lengths and counts are u64, network order)
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

try:  # numpy is optional: without it arrays cannot be sent or received, all else works
    import numpy as np
except ImportError:  # pragma: no cover - the Lambda layer without numpy
    np = None  # type: ignore[assignment]

MAGIC = b"FSC\x01"
_HEADER = struct.Struct("!4sQ")
HEADER_SIZE = _HEADER.size  # 12
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_DEPTH = 100
MAX_INT_BYTES = 64 * 1024
MAX_NDIM = 32

NONE, FALSE, TRUE, INT64, BIGINT, FLOAT, STR, BYTES = range(8)
LIST, TUPLE, DICT, ARRAY, NPSCALAR = range(8, 13)
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")
_F64 = struct.Struct("!d")
_U32 = struct.Struct("!I")
_PLAIN_DTYPE = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")
_PLAIN_KINDS = "biufc"
_NATIVE_ONLY = "gG"  # long double: platform-specific, not exposable in foreign byte order


class SafeCodecError(ValueError):
    """Bytes that are not a safe-codec value, or a value it cannot carry; says which."""


class UnsupportedType(SafeCodecError, TypeError):
    """The value holds something that is not plain data (encoding side)."""


# -- encoding ---------------------------------------------------------------------------


def _is_plain_dtype(dtype: Any) -> bool:
    return bool(
        dtype.kind in _PLAIN_KINDS
        and dtype.char not in _NATIVE_ONLY
        and not dtype.hasobject
        and dtype.fields is None
    )


def _encode_into(obj: Any, out: list[bytes | memoryview], depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise UnsupportedType(f"the value nests deeper than {max_depth} levels (or is cyclic)")
    kind = type(obj)  # exact types: a subclass (IntEnum, namedtuple...) would lose its type
    if obj is None:
        out.append(bytes([NONE]))
    elif kind is bool:
        out.append(bytes([TRUE if obj else FALSE]))
    elif kind is int:
        if -(2**63) <= obj < 2**63:
            out.append(bytes([INT64]) + _I64.pack(obj))
        else:
            size = (obj.bit_length() + 8) // 8
            if size > MAX_INT_BYTES:
                raise UnsupportedType(f"an int of {size} bytes is over {MAX_INT_BYTES}")
            out.append(bytes([BIGINT]) + _U32.pack(size) + obj.to_bytes(size, "big", signed=True))
    elif kind is float:
        out.append(bytes([FLOAT]) + _F64.pack(obj))
    elif kind is str:
        raw = obj.encode("utf-8", "surrogatepass")
        out += (bytes([STR]) + _U64.pack(len(raw)), raw)
    elif kind is bytes:
        out += (bytes([BYTES]) + _U64.pack(len(obj)), obj)
    elif kind is bytearray or kind is memoryview:  # arrive as bytes
        raw_view = memoryview(obj)
        raw_view = (raw_view if raw_view.c_contiguous else memoryview(raw_view.tobytes())).cast("B")
        out += (bytes([BYTES]) + _U64.pack(raw_view.nbytes), raw_view)
    elif kind is list or kind is tuple:
        out.append(bytes([LIST if kind is list else TUPLE]) + _U64.pack(len(obj)))
        for item in obj:
            _encode_into(item, out, depth + 1, max_depth)
    elif kind is dict:
        out.append(bytes([DICT]) + _U64.pack(len(obj)))
        for key, value in obj.items():
            _encode_into(key, out, depth + 1, max_depth)
            _encode_into(value, out, depth + 1, max_depth)
    elif (
        np is not None
        and (kind is np.ndarray or isinstance(obj, np.generic))
        and _is_plain_dtype(obj.dtype)
    ):
        _encode_numpy(obj, out)
    else:
        raise UnsupportedType(
            f"the safe codec carries plain data only (None, bool, int, float, str, bytes, "
            f"list, tuple, dict, numpy arrays of numbers; not their subclasses); got "
            f"{type(obj).__name__}: send "
            "it over an authenticated link, or with allow_pickle=True"
        )


def _encode_numpy(obj: Any, out: list[bytes | memoryview]) -> None:
    dtype = obj.dtype.str.encode("ascii")
    if isinstance(obj, np.generic):
        out += (bytes([NPSCALAR, len(dtype)]) + dtype, obj.tobytes())
        return
    array = obj if obj.flags.c_contiguous else obj.copy(order="C")  # keeps 0-d arrays 0-d
    head = bytes([ARRAY, len(dtype)]) + dtype + bytes([array.ndim])
    head += struct.pack(f"!{array.ndim}Q", *array.shape)
    out.append(head)
    if array.nbytes:
        out.append(memoryview(array.reshape(-1)).cast("B"))


def encode_chunks(obj: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> list[bytes | memoryview]:
    """The encoding of ``obj`` as buffers to send in order (array payloads not copied)."""
    out: list[bytes | memoryview] = []
    _encode_into(obj, out, 0, max_depth)
    return out


def encode(obj: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The encoding of ``obj`` as one bytes object."""
    return b"".join(encode_chunks(obj, max_depth))


def frame_header(payload_length: int) -> bytes:
    """The 12-byte frame header announcing ``payload_length`` bytes of encoded value."""
    return _HEADER.pack(MAGIC, payload_length)


# -- decoding ---------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: memoryview, max_depth: int) -> None:
        self.data, self.pos, self.max_depth = data, 0, max_depth

    def take(self, size: int, what: str) -> memoryview:
        if size > len(self.data) - self.pos:
            raise SafeCodecError(
                f"{what} announces {size} bytes but only {len(self.data) - self.pos} remain"
            )
        start = self.pos
        self.pos += size
        return self.data[start : self.pos]

    def count(self, what: str, min_item_size: int) -> int:
        (n,) = _U64.unpack(self.take(8, what))
        if n * min_item_size > len(self.data) - self.pos:
            raise SafeCodecError(f"{what} announces {n} items, more than the bytes left")
        return int(n)

    def value(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise SafeCodecError(f"the value nests deeper than {self.max_depth} levels")
        tag = self.take(1, "a tag")[0]
        simple = _SIMPLE.get(tag)
        if simple is not None:
            return simple(self)
        if tag in (LIST, TUPLE):
            items = [self.value(depth + 1) for _ in range(self.count("a sequence", 1))]
            return items if tag == LIST else tuple(items)
        if tag == DICT:
            return self.mapping(depth)
        if tag in (ARRAY, NPSCALAR):
            return self.numpy(tag)
        raise SafeCodecError(f"unknown tag {tag} at byte {self.pos - 1}")

    def mapping(self, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for _ in range(self.count("a dict", 2)):
            key = self.value(depth + 1)
            try:
                hash(key)
            except TypeError:
                raise SafeCodecError(f"a dict key of type {type(key).__name__}") from None
            if key in result:
                raise SafeCodecError("a dict key appears twice")
            result[key] = self.value(depth + 1)
        return result

    def text(self) -> str:
        raw = self.take(self.count("a string", 1), "a string")
        try:
            return str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise SafeCodecError("a string is not UTF-8") from None

    def bigint(self) -> int:
        (size,) = _U32.unpack(self.take(4, "an int"))
        if size > MAX_INT_BYTES:
            raise SafeCodecError(f"an int of {size} bytes is over {MAX_INT_BYTES}")
        return int.from_bytes(self.take(size, "an int"), "big", signed=True)

    def dtype(self) -> Any:
        raw = bytes(self.take(self.take(1, "a dtype")[0], "a dtype"))
        return plain_dtype(raw.decode("ascii", "replace"))

    def numpy(self, tag: int) -> Any:
        dtype = self.dtype()
        if tag == NPSCALAR:
            return np.frombuffer(self.take(dtype.itemsize, "a numpy scalar"), dtype)[0].copy()
        ndim = self.take(1, "an array")[0]
        if ndim > MAX_NDIM:
            raise SafeCodecError(f"an array of {ndim} dimensions (at most {MAX_NDIM})")
        shape = struct.unpack(f"!{ndim}Q", self.take(8 * ndim, "an array shape"))
        size = dtype.itemsize
        for dim in shape:
            size *= dim
        if any(dim > len(self.data) for dim in shape) and size == 0:
            raise SafeCodecError("an empty array with an absurd shape")
        payload = self.take(size, "an array")
        array = np.empty(shape, dtype)
        if size:
            memoryview(array.reshape(-1)).cast("B")[:] = payload  # type: ignore[arg-type]
        return array


_SIMPLE: dict[int, Callable[[_Reader], Any]] = {
    NONE: lambda r: None,
    FALSE: lambda r: False,
    TRUE: lambda r: True,
    INT64: lambda r: _I64.unpack(r.take(8, "an int"))[0],
    BIGINT: _Reader.bigint,
    FLOAT: lambda r: _F64.unpack(r.take(8, "a float"))[0],
    STR: _Reader.text,
    BYTES: lambda r: bytes(r.take(r.count("bytes", 1), "bytes")),
}


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """The value encoded in exactly ``data``; SafeCodecError for anything else."""
    view = memoryview(data).cast("B")
    if view.nbytes > max_message_bytes:
        raise SafeCodecError(f"a message of {view.nbytes} bytes is over {max_message_bytes}")
    reader = _Reader(view, max_depth)
    value = reader.value(0)
    if reader.pos != view.nbytes:
        raise SafeCodecError(f"{view.nbytes - reader.pos} bytes after the value")
    return value


def payload_length(header: bytes, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> int:
    """The payload size a frame header announces; SafeCodecError if it is not one of ours
    or announces more than ``max_message_bytes`` (before anything is allocated)."""
    if len(header) != HEADER_SIZE:
        raise SafeCodecError(f"a frame header is {HEADER_SIZE} bytes, got {len(header)}")
    magic, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise SafeCodecError(f"not a safe-codec frame (magic {magic!r})")
    if length > max_message_bytes:
        raise SafeCodecError(
            f"a frame announces {length} bytes, over max_message_bytes={max_message_bytes}: "
            "refused before reading it (raise max_message_bytes if the peer is trusted)"
        )
    return int(length)


def plain_dtype(text: str) -> Any:
    """The numpy dtype named by an untrusted string, if plain (bool, ints, floats, complex).

    Channel frames must pass a peer's dtype through this before ``np.empty``: numpy
    exports object arrays as buffers, so raw bytes received into an ``|O`` array become
    object pointers the peer chose (a crash at best).
    """
    if np is None:
        raise SafeCodecError("a numpy array arrived but numpy is not installed here")
    if not _PLAIN_DTYPE.fullmatch(text):
        raise SafeCodecError(f"dtype {text[:20]!r} is not a plain numeric dtype")
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise SafeCodecError(f"dtype {text!r} is not known to numpy") from None
    if not _is_plain_dtype(dtype) or dtype.itemsize == 0:
        raise SafeCodecError(f"dtype {text!r} is not a plain numeric dtype")
    return dtype


def check_array_frame(
    dtype_text: str,
    shape: tuple[int, ...],
    length: int,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Any:
    """Validate a raw-array frame header before allocating for it; returns the dtype.

    The payload ``length`` must be at most ``max_message_bytes`` and exactly
    ``prod(shape) * itemsize``, and the dtype plain (``plain_dtype``).
    """
    if length > max_message_bytes:
        raise SafeCodecError(
            f"an array frame announces {length} bytes, over max_message_bytes={max_message_bytes}"
        )
    dtype = plain_dtype(dtype_text)
    if len(shape) > MAX_NDIM:
        raise SafeCodecError(f"an array of {len(shape)} dimensions (at most {MAX_NDIM})")
    size = dtype.itemsize
    for dim in shape:
        size *= dim
    absurd = size == 0 and any(dim > max_message_bytes for dim in shape)
    if size != length or absurd:
        raise SafeCodecError(
            f"an array frame of shape {shape[:8]} and dtype {dtype_text} announces {length} bytes"
        )
    return dtype


def read_frame(
    recv_exactly: Callable[[int], bytes],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read one frame through ``recv_exactly(n)`` (which returns exactly n bytes or raises):
    the header is checked before the payload is asked for."""
    length = payload_length(recv_exactly(HEADER_SIZE), max_message_bytes)
    return decode(recv_exactly(length), max_message_bytes=max_message_bytes, max_depth=max_depth)

"""The frame format on a Communicator's connections, as pure code over bytes.

Every message is one frame: a fixed 20-byte header, then for numpy arrays the dtype
string and the shape, then the payload. Arrays travel as their raw bytes so the receiver
can ``recv_into`` a preallocated array (no pickling, no extra copy); other plain data
(None, bool, int, float, str, lists, tuples, dicts of these...) in ``fmi_client.safecodec``'s
encoding, whose decoding runs no code; anything else is pickled, and only where pickle is
allowed (an authenticated link, or ``allow_pickle=True``). ::

    magic:u8 kind:u8 tag:i64 length:u64 dtype_len:u8 ndim:u8 | dtype | shape:u64*ndim | payload
"""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any, NamedTuple

from fmi_client import safecodec

try:  # numpy is optional: without it everything is pickled
    import numpy as np
except ImportError:  # pragma: no cover - exercised in the Lambda layer without numpy
    np = None  # type: ignore[assignment]

MAGIC = 0xF7
KIND_PICKLE = 0
KIND_ARRAY = 1
KIND_BYTES = 2
KIND_SAFE = 3  # safecodec's value encoding (no frame header of its own)
_FIXED = FIXED_STRUCT = struct.Struct("!BBqQBB")
FIXED_SIZE = _FIXED.size  # 20
#: The most dimensions an array frame may have (numpy's own limit: 64 since 2.0, 32 before).
MAX_DIMS = 32 if np is None or int(np.__version__.split(".")[0]) < 2 else 64


#: dtype kinds numpy cannot expose as a buffer (datetime64, timedelta64)
_NO_BUFFER = "Mm"


class FrameError(ValueError):
    """Bytes that are not a frame of ours: the stream is out of step or not a peer."""


class PickleRefused(FrameError):
    """A peer sent a pickled object where pickle is not allowed; it was never loaded."""


class FrameTooLarge(FrameError):
    """A frame (or the frames queued under tags nobody reads) over max_message_bytes;
    refused before anything was allocated for it."""


def not_plain(exc: safecodec.UnsupportedType) -> safecodec.UnsupportedType:
    """The error for an object that needs pickle on a link where pickle is not allowed."""
    return safecodec.UnsupportedType(
        f"{exc}. Objects other than plain data are pickled, and pickle is refused on links "
        "that are not authenticated: give every rank the same secret (secret=... or "
        "FMI_SECRET) or pass allow_pickle=True if every peer is trusted"
    )


class FrameHeader(NamedTuple):
    kind: int
    tag: int
    length: int  # payload bytes
    dtype_len: int
    ndim: int

    @property
    def meta_size(self) -> int:
        """Bytes of dtype string and shape that follow the fixed header."""
        return self.dtype_len + 8 * self.ndim


def is_array(obj: Any) -> bool:
    """A numpy array that travels raw: not of objects, not structured, not datetime or
    timedelta (those have no buffer interface; all three are pickled)."""
    if np is None or not isinstance(obj, np.ndarray):
        return False
    dtype = obj.dtype
    return dtype.kind not in _NO_BUFFER and not dtype.hasobject and dtype.fields is None


def encode(obj: Any, tag: int, allow_pickle: bool = True) -> tuple[bytes, memoryview | bytes]:
    """The header bytes and the payload buffer for ``obj`` (arrays are not copied).

    bytes and plain arrays travel raw, other plain data safe-encoded; the rest is pickled
    if ``allow_pickle``, else ``safecodec.UnsupportedType`` says what to do."""
    if is_array(obj):
        if not obj.flags.c_contiguous:
            obj = np.ascontiguousarray(obj)
        dtype = obj.dtype.str.encode("ascii")
        payload = memoryview(obj.reshape(-1)).cast("B") if obj.size else b""
        header = (
            _FIXED.pack(MAGIC, KIND_ARRAY, tag, obj.nbytes, len(dtype), obj.ndim)
            + dtype
            + struct.pack(f"!{obj.ndim}Q", *obj.shape)
        )
        return header, payload
    if isinstance(obj, (bytes, bytearray)):
        return _FIXED.pack(MAGIC, KIND_BYTES, tag, len(obj), 0, 0), bytes(obj)
    try:
        chunks = safecodec.encode_chunks(obj)
    except safecodec.UnsupportedType as exc:
        if not allow_pickle:
            raise not_plain(exc) from None
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return _FIXED.pack(MAGIC, KIND_PICKLE, tag, len(payload), 0, 0), payload
    safe = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return _FIXED.pack(MAGIC, KIND_SAFE, tag, len(safe), 0, 0), safe


def decode_fixed(data: bytes | memoryview) -> FrameHeader:
    magic, kind, tag, length, dtype_len, ndim = _FIXED.unpack(data)
    if magic != MAGIC or kind > KIND_SAFE:
        raise FrameError(
            f"not an fmi_client frame (magic {magic:#x}, kind {kind}): the connection is out "
            "of step, or the peer is not an fmi_client Communicator of this version"
        )
    return FrameHeader(kind, tag, length, dtype_len, ndim)


def decode_array_meta(header: FrameHeader, meta: bytes | memoryview) -> tuple[str, tuple[int, ...]]:
    """The dtype string and shape of an array frame, checked against the header: a dtype
    that ``encode`` sends (canonical, no objects, no fields) and exactly
    ``header.length`` bytes of it, so the payload can be read straight into the array."""
    try:
        dtype = bytes(meta[: header.dtype_len]).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(
            f"an array frame's dtype is not ASCII ({bytes(meta[: header.dtype_len])!r}): "
            "the connection is out of step"
        ) from None
    shape: tuple[int, ...] = struct.unpack(f"!{header.ndim}Q", meta[header.dtype_len :])
    if np is not None:  # without numpy the Channel refuses array frames
        _check_array_meta(header, dtype, shape)
    return dtype, shape


def _check_array_meta(header: FrameHeader, dtype: str, shape: tuple[int, ...]) -> None:
    try:
        parsed = np.dtype(dtype)
    except Exception:  # numpy raises TypeError, ValueError or SyntaxError for bad strings
        parsed = None
    if (
        parsed is None
        or parsed.str != dtype
        or parsed.hasobject
        or parsed.fields is not None
        or parsed.subdtype is not None
        or parsed.kind in _NO_BUFFER
    ):
        raise FrameError(
            f"an array frame announces dtype {dtype!r}, which fmi_client never sends raw: "
            "the connection is out of step, or the peer is not an fmi_client Communicator"
        )
    nbytes = math.prod(shape) * parsed.itemsize
    # numpy refuses shapes whose nonzero extents multiply past its index type, even empty ones
    extent = math.prod(d for d in shape if d) * max(parsed.itemsize, 1)
    if header.ndim > MAX_DIMS or nbytes != header.length or extent >= 1 << 63:
        raise FrameError(
            f"an array frame of shape {shape} and dtype {dtype!r} ({nbytes} bytes) announces "
            f"{header.length} payload bytes: the connection is out of step"
        )


def decode_payload(
    header: FrameHeader,
    payload: bytes | bytearray | memoryview,
    max_message_bytes: int = safecodec.DEFAULT_MAX_MESSAGE_BYTES,
) -> Any:
    """The object of a bytes, safe or pickle frame (callers refuse pickle frames from
    unauthenticated peers before reading them: see ``Channel``)."""
    if header.kind == KIND_BYTES:
        return bytes(payload)
    if header.kind == KIND_SAFE:
        try:
            return safecodec.decode(payload, max_message_bytes=max_message_bytes)
        except safecodec.SafeCodecError as exc:
            raise FrameError(f"a safe-encoded frame does not decode: {exc}") from None
    try:
        return pickle.loads(payload)
    except Exception as exc:  # whatever the bytes make pickle raise
        raise FrameError(
            f"a pickled frame does not unpickle here ({type(exc).__name__}: {exc}): the "
            "connection is out of step, or the peer sent a class this process cannot import"
        ) from exc


__all__ = [
    "FIXED_SIZE",
    "FIXED_STRUCT",
    "KIND_ARRAY",
    "KIND_BYTES",
    "KIND_PICKLE",
    "KIND_SAFE",
    "MAGIC",
    "MAX_DIMS",
    "FrameError",
    "FrameHeader",
    "FrameTooLarge",
    "PickleRefused",
    "decode_array_meta",
    "decode_fixed",
    "decode_payload",
    "encode",
    "is_array",
    "not_plain",
    "np",
]

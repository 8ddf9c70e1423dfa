"""The safe codec: byte vectors, round trips, malformations, fuzz, bounded allocation."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import socket
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fmi_client.safecodec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_INT_BYTES,
    SafeCodecError,
    UnsupportedType,
    check_array_frame,
    decode,
    encode,
    encode_chunks,
    frame_header,
    payload_length,
    read_frame,
)

# -- vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, b"\x00"),
        (False, b"\x01"),
        (True, b"\x02"),
        (1, b"\x03" + struct.pack("!q", 1)),
        (-(2**63), b"\x03\x80" + bytes(7)),
        (2**63, b"\x04\x00\x00\x00\x09\x00\x80" + bytes(7)),
        (1.5, b"\x05" + struct.pack("!d", 1.5)),
        ("hé", b"\x06" + struct.pack("!Q", 3) + "hé".encode()),
        (b"\x00\xff", b"\x07" + struct.pack("!Q", 2) + b"\x00\xff"),
        ([None], b"\x08" + struct.pack("!Q", 1) + b"\x00"),
        ((True,), b"\x09" + struct.pack("!Q", 1) + b"\x02"),
        ({"": None}, b"\x0a" + struct.pack("!Q", 1) + b"\x06" + bytes(8) + b"\x00"),
    ],
)
def test_vectors(value, wire):
    assert encode(value) == wire
    decoded = decode(wire)
    assert decoded == value and type(decoded) is type(value)


def test_array_vector():
    array = np.array([[1, 2, 3]], dtype="<i2")
    wire = encode(array)
    assert wire == (b"\x0b\x03<i2\x02" + struct.pack("!QQ", 1, 3) + b"\x01\x00\x02\x00\x03\x00")
    back = decode(wire)
    assert back.dtype == array.dtype and back.shape == (1, 3) and back.flags.writeable
    assert (back == array).all()


def test_array_payload_is_not_copied_when_encoding():
    array = np.arange(1000, dtype=np.float32)
    chunks = encode_chunks(array)
    assert isinstance(chunks[-1], memoryview) and chunks[-1].obj is not None
    assert np.shares_memory(np.frombuffer(chunks[-1], np.float32), array)


# -- round trips ------------------------------------------------------------------------

plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
hashable = st.recursive(plain_leaves, lambda inner: st.tuples(inner, inner), max_leaves=5)
plain = st.recursive(
    plain_leaves,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(hashable, inner, max_size=5)
    ),
    max_leaves=30,
)


def same(a, b) -> bool:
    """Equal, with the same types all the way down (1 == True == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(plain)
def test_roundtrip_plain_values(value):
    assert same(decode(encode(value)), value)


@given(st.recursive(st.floats() | st.text(), lambda s: st.lists(s, max_size=3), max_leaves=8))
def test_roundtrip_is_stable_with_nan(value):
    assert encode(decode(encode(value))) == encode(value)


plain_dtypes = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=")
    | hnp.complex_number_dtypes(endianness="=")
    | hnp.integer_dtypes(endianness=">")
)


@settings(max_examples=60)
@given(hnp.arrays(plain_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0)))
def test_roundtrip_arrays(array):
    back = decode(encode(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def test_bytes_like_values_travel_as_bytes():
    strided = memoryview(bytes(range(10)))[::2]
    assert decode(encode(strided)) == bytes(range(0, 10, 2))
    assert decode(encode(memoryview(np.arange(3, dtype="<u2")))) == b"\x00\x00\x01\x00\x02\x00"
    assert decode(encode(bytearray(b"ab"))) == b"ab"


def test_roundtrip_numpy_scalars_and_views():
    for scalar in (np.float32(1.5), np.int64(-3), np.bool_(True), np.complex64(1j)):
        back = decode(encode(scalar))
        assert type(back) is type(scalar) and back == scalar
    strided = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    assert (decode(encode(strided)) == strided).all()


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, lambda: 0, np.array([object()]), np.zeros(2, dtype="U3"),
     np.zeros(2, dtype=[("a", "i4")]), np.zeros(1, dtype="M8[s]"), 2 ** (8 * MAX_INT_BYTES)],
    ids=["object", "set", "lambda", "object-array", "str-array", "record-array", "datetime",
         "huge-int"],
)  # fmt: skip
def test_not_plain_data_is_refused_when_encoding(value):
    with pytest.raises(UnsupportedType, match=r"plain|bytes"):
        encode(value)


def test_cycles_and_deep_nesting_are_refused_when_encoding():
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(UnsupportedType, match="deeper"):
        encode(cycle)


def nested(depth: int) -> bytes:
    return (b"\x08" + struct.pack("!Q", 1)) * depth + b"\x00"


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"", "a tag announces 1"),
        (b"\x0d", "unknown tag 13"),
        (b"\x80\x04\x95", "unknown tag 128"),  # a pickle is not a value
        (b"\x03\x00", "an int announces 8"),
        (b"\x00\x00", "1 bytes after the value"),
        (b"\x06" + struct.pack("!Q", 2**62), "more than the bytes left"),
        (b"\x08" + struct.pack("!Q", 2**40) + b"\x00", "more than the bytes left"),
        (b"\x0a" + struct.pack("!Q", 1) + b"\x00", "more than the bytes left"),
        (b"\x06" + struct.pack("!Q", 1) + b"\xff", "not UTF-8"),
        (b"\x0a" + struct.pack("!Q", 2) + b"\x00\x00\x00\x01", "twice"),
        (b"\x0a" + struct.pack("!Q", 1) + b"\x08" + bytes(8) + b"\x00", "dict key of type list"),
        (b"\x04" + struct.pack("!I", MAX_INT_BYTES + 1), "over"),
        (b"\x0b\x02|O\x00", "not a plain numeric dtype"),
        (b"\x0b\x03<V8\x00", "not a plain numeric dtype"),
        (b"\x0b\x03<M8\x00", "not a plain numeric dtype"),
        (b"\x0b\x03<f3\x00", "not known to numpy"),
        (b"\x0b\x03<f8\x21", "dimensions"),
        (b"\x0b\x03<f8\x01" + struct.pack("!Q", 2**40), "an array announces"),
        (b"\x0b\x03<f8\x02" + struct.pack("!QQ", 0, 2**60), "absurd shape"),
        (nested(101), "deeper than 100"),
    ],
)
def test_malformed_bytes_are_refused(wire, match):
    with pytest.raises(SafeCodecError, match=match):
        decode(wire)


def test_every_dtype_string_the_pattern_admits_decodes_or_is_refused():
    for order in ("", "<", ">", "|", "="):
        for kind in "biufc":
            for size in range(100):
                text = f"{order}{kind}{size}".encode()
                head = bytes([len(text)]) + text
                for wire in (b"\x0b" + head + b"\x01" + struct.pack("!Q", 1), b"\x0c" + head):
                    with contextlib.suppress(SafeCodecError):
                        assert decode(wire + bytes(64 - len(wire) % 64)).dtype.kind in "biufc"


def test_long_double_is_refused_both_ways():
    with pytest.raises(UnsupportedType):
        encode(np.zeros(2, dtype=np.longdouble))
    with pytest.raises(SafeCodecError, match="not a plain numeric dtype"):
        decode(b"\x0b\x04>f16\x01" + struct.pack("!Q", 1) + bytes(16))


def test_depth_limit_is_adjustable():
    assert decode(nested(100)) is not None
    with pytest.raises(SafeCodecError):
        decode(nested(10), max_depth=5)


def test_a_message_over_the_limit_is_refused():
    with pytest.raises(SafeCodecError, match="over 10"):
        decode(encode(b"x" * 20), max_message_bytes=10)


def test_a_stranger_pickle_is_never_loaded(tmp_path: Path):
    mark = tmp_path / "mark"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {mark}",))

    evil = pickle.dumps(Payload())
    with pytest.raises(SafeCodecError):
        decode(evil)
    assert decode(encode(evil)) == evil  # carried as bytes, never loaded
    assert not mark.exists()


@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data):
    """Arbitrary bytes decode to a value or raise SafeCodecError, nothing else; a decoded
    value is always plain data (it encodes again)."""
    try:
        value = decode(data)
    except SafeCodecError:
        return
    again = encode(value)
    assert encode(decode(again)) == again


@given(plain, st.data())
def test_fuzz_mutated_encodings(value, data):
    wire = bytearray(encode(value))
    position = data.draw(st.integers(0, len(wire) - 1))
    wire[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        back = decode(bytes(wire[:cut]))
    except SafeCodecError:
        return
    encode(back)  # whatever decodes is plain data


# -- frames over a real socket ----------------------------------------------------------


def test_frame_header_vector_and_limits():
    assert frame_header(5) == b"FSC\x01" + struct.pack("!Q", 5)
    assert payload_length(frame_header(DEFAULT_MAX_MESSAGE_BYTES)) == DEFAULT_MAX_MESSAGE_BYTES
    with pytest.raises(SafeCodecError, match="max_message_bytes"):
        payload_length(frame_header(DEFAULT_MAX_MESSAGE_BYTES + 1))
    with pytest.raises(SafeCodecError, match="not a safe-codec frame"):
        payload_length(b"\x80\x04" + bytes(10))
    with pytest.raises(SafeCodecError, match="12 bytes"):
        payload_length(b"FSC")


def exact_reader(sock: socket.socket):
    def recv_exactly(n: int) -> bytes:
        data = sock.recv(n, socket.MSG_WAITALL)
        if len(data) != n:
            raise EOFError(f"wanted {n} bytes, got {len(data)}")
        return data

    return recv_exactly


def test_frames_over_a_socket():
    a, b = socket.socketpair()
    with a, b:
        value = {"weights": np.ones((3, 4), np.float32), "step": 7, "tag": ("ok", None)}
        payload = encode(value)
        a.sendall(frame_header(len(payload)) + payload)
        back = read_frame(exact_reader(b))
        assert back["step"] == 7 and back["tag"] == ("ok", None)
        assert (back["weights"] == 1).all()


@pytest.mark.parametrize("announced", [2**62, DEFAULT_MAX_MESSAGE_BYTES + 1])
def test_oversized_frame_header_is_refused_without_allocation(announced):
    """A peer announces a huge frame: refused from the header, nothing allocated for it."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame_header(announced) + b"\x07" * 4096)
        tracemalloc.start()
        try:
            with pytest.raises(SafeCodecError, match="max_message_bytes"):
                read_frame(exact_reader(b))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024
        assert len(b.recv(8192)) == 4096  # the payload was never read


def test_huge_array_shape_in_a_small_frame_is_refused_without_allocation():
    wire = b"\x0b\x03<f8\x02" + struct.pack("!QQ", 2**20, 2**20) + bytes(64)
    tracemalloc.start()
    try:
        with pytest.raises(SafeCodecError, match="an array announces"):
            decode(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 and not math.isnan(peak)


# -- checking the Communicator's raw array frames ----------------------------------------


def test_check_array_frame_accepts_consistent_plain_headers():
    assert check_array_frame("<f4", (2, 3), 24) == np.dtype("<f4")
    assert check_array_frame("|b1", (), 1) == np.dtype(bool)
    assert check_array_frame("<i8", (0, 5000), 0) == np.dtype("<i8")


@pytest.mark.parametrize(
    ("dtype", "shape", "length", "match"),
    [
        ("|O", (1,), 8, "not a plain numeric dtype"),  # a stranger's object pointers
        ("|O8", (1,), 8, "not a plain numeric dtype"),
        ("<U4", (1,), 16, "not a plain numeric dtype"),
        ("V8", (1,), 8, "not a plain numeric dtype"),
        ("<f4", (2, 3), 8, "announces 8 bytes"),
        ("<f4", (2**40, 2**40), 0, "announces 0 bytes"),
        ("<f4", (0, 2**60), 0, "announces 0 bytes"),
        ("<f4", (1,) * 33, 4, "dimensions"),
        ("<f4", (2**40,), 2**42, "max_message_bytes"),
    ],
)
def test_check_array_frame_refuses(dtype, shape, length, match):
    with pytest.raises(SafeCodecError, match=match):
        check_array_frame(dtype, shape, length)

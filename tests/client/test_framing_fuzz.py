"""Property tests of the Communicator's frame decoder: fmi_client.framing and the way a
Channel reads frames off its socket.

Bytes in, values out or FrameError: never another exception. A Channel fed frames in
arbitrary splits yields the values that were sent, and fed damaged frames yields values,
FrameError, or PeerLost when the stream ends mid-frame (EOF).

Announced payload lengths in the stream tests stay small by construction: today a
header announcing 2**40 payload bytes makes the Channel allocate that much before it
reads a byte (bounding frames is issue 11's job). The pure decoders allocate nothing
from a header and get fully arbitrary bytes.

The stream tests read through ``SplitSocket``, which hands the Channel exactly one
chunk per receive: a real socket coalesces writes, so only a stand-in can make the
splits the property quantifies over. One test feeds the same kind of streams through
a real socket pair.
"""

from __future__ import annotations

import itertools
import math
import socket
import struct
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fmi_client import PeerLost, framing
from fmi_client.channel import READ_CHUNK, Channel
from fmi_client.framing import FrameError

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------

tags = st.integers(min_value=-(2**63), max_value=2**63 - 1)
python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
dtypes = (
    hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="?")
    | hnp.floating_dtypes(endianness="?")
    | hnp.complex_number_dtypes(endianness="?")
    | hnp.boolean_dtypes()
    | hnp.byte_string_dtypes(max_len=4)
    | hnp.datetime64_dtypes(endianness="=")  # numpy unpickles ">M8" as "<M8"
)
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
big_arrays = st.integers(min_value=READ_CHUNK // 8 - 3, max_value=READ_CHUNK // 8 + 700).map(
    lambda n: np.arange(n, dtype=np.float64)
)
values = python_values | arrays | st.binary(max_size=300) | big_arrays


@st.composite
def frame_like(draw: st.DrawFn) -> bytes:
    """A fixed header with arbitrary fields (length bounded), then arbitrary bytes that may
    or may not be the meta and payload it announces."""
    magic = draw(st.sampled_from([framing.MAGIC, framing.MAGIC]) | st.integers(0, 255))
    kind = draw(st.integers(0, 2) | st.integers(0, 255))
    length = draw(st.integers(0, 64) | st.integers(0, READ_CHUNK + 4096))
    dtype_len = draw(st.integers(0, 4) | st.integers(0, 255))
    ndim = draw(st.integers(0, 3) | st.integers(0, 255))
    header = framing.FIXED_STRUCT.pack(magic, kind, draw(tags), length, dtype_len, ndim)
    return header + draw(st.binary(max_size=200))


def encoded(obj: Any, tag: int) -> bytes:
    header, payload = framing.encode(obj, tag)
    return header + bytes(payload)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (some chunks one byte, some large)."""
    if not data:
        return []
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


class SplitSocket:
    """The receiving end of a connection that delivers ``chunks`` one per receive, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if not self.chunks:
            return 0
        view = memoryview(buffer).cast("B")
        chunk = self.chunks[0]
        n = min(len(view), len(chunk))
        view[:n] = chunk[:n]
        if n == len(chunk):
            self.chunks.pop(0)
        else:
            self.chunks[0] = chunk[n:]
        return n

    def sendall(self, data: Any) -> None:
        raise AssertionError("the decoder tests never send")

    def gettimeout(self) -> float | None:
        return None

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def same(got: Any, sent: Any) -> bool:
    """Equal values, and arrays equal byte for byte (NaN and NaT included)."""
    if isinstance(sent, np.ndarray):
        return (
            isinstance(got, np.ndarray)
            and got.dtype == sent.dtype
            and got.shape == sent.shape
            and got.tobytes() == np.ascontiguousarray(sent).tobytes()
        )
    return bool(got == sent) and type(got) is type(sent)


def drain(channel: Channel, tag: int) -> tuple[list[Any], BaseException]:
    """Every value the channel yields for ``tag`` until it raises, and what it raised."""
    got = []
    while True:
        try:
            got.append(channel.recv(tag))
        except Exception as exc:  # the property: which exceptions come out
            return got, exc


# -- the pure decoders: any bytes -----------------------------------------------------------


@FUZZ
@given(st.binary(min_size=framing.FIXED_SIZE, max_size=framing.FIXED_SIZE))
def test_any_fixed_header_decodes_or_raises_frame_error(data: bytes) -> None:
    try:
        header = framing.decode_fixed(data)
    except FrameError:
        assert data[0] != framing.MAGIC or data[1] > framing.KIND_SAFE
        return
    kinds = (framing.KIND_PICKLE, framing.KIND_ARRAY, framing.KIND_BYTES, framing.KIND_SAFE)
    assert header.kind in kinds
    assert framing.FIXED_STRUCT.pack(framing.MAGIC, *header) == data


@FUZZ
@given(
    length=st.integers(0, 2**64 - 1),
    dtype_len=st.integers(0, 255),
    ndim=st.integers(0, 255),
    meta=st.data(),
)
def test_any_array_meta_decodes_consistently_or_raises_frame_error(
    length: int, dtype_len: int, ndim: int, meta: st.DataObject
) -> None:
    header = framing.FrameHeader(framing.KIND_ARRAY, 0, length, dtype_len, ndim)
    size = header.meta_size
    # arbitrary bytes, or a plausible dtype string followed by arbitrary shape bytes
    plausible = meta.draw(st.sampled_from([b"<f8", b"|b1", b"<i4", b"|V8", b"O"]))
    raw = meta.draw(
        st.binary(min_size=size, max_size=size)
        | st.binary(min_size=max(0, size - len(plausible)), max_size=size).map(
            lambda tail: (plausible + tail)[:size].ljust(size, b"\0")
        )
    )
    try:
        dtype, shape = framing.decode_array_meta(header, raw)
    except FrameError:
        return
    parsed = np.dtype(dtype)  # what the Channel will allocate: exactly `length` bytes
    assert len(shape) == ndim and math.prod(shape) * parsed.itemsize == length
    assert not parsed.hasobject and parsed.fields is None


@FUZZ
@given(kind=st.sampled_from([framing.KIND_PICKLE, framing.KIND_BYTES]), payload=st.binary())
def test_any_payload_decodes_or_raises_frame_error(kind: int, payload: bytes) -> None:
    header = framing.FrameHeader(kind, 0, len(payload), 0, 0)
    try:
        framing.decode_payload(header, payload)
    except FrameError as exc:
        assert kind == framing.KIND_PICKLE and "does not unpickle" in str(exc)


# -- round trips ----------------------------------------------------------------------------


@FUZZ
@given(obj=values, tag=tags)
def test_encode_decode_round_trip(obj: Any, tag: int) -> None:
    data = encoded(obj, tag)
    header = framing.decode_fixed(data[: framing.FIXED_SIZE])
    assert header.tag == tag
    rest = data[framing.FIXED_SIZE :]
    if header.kind == framing.KIND_ARRAY:
        dtype, shape = framing.decode_array_meta(header, rest[: header.meta_size])
        payload = rest[header.meta_size :]
        got = np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)
    else:
        payload = rest
        got = framing.decode_payload(header, payload)
    assert len(payload) == header.length
    assert same(got, obj)


@FUZZ
@given(st.lists(st.tuples(values, st.sampled_from([-1, 0, 5])), max_size=6), st.data())
def test_a_channel_yields_what_was_sent_whatever_the_splits(
    frames: list[tuple[Any, int]], data: st.DataObject
) -> None:
    stream = b"".join(encoded(obj, tag) for obj, tag in frames)
    # datetime arrays are pickled: this peer is trusted
    channel = Channel(SplitSocket(data.draw(split(stream))), 0, 1, allow_pickle=True)  # type: ignore[arg-type]
    for tag in (0, -1, 5):  # frames of other tags are queued meanwhile, in order
        want = [obj for obj, t in frames if t == tag]
        got = [channel.recv(tag) for _ in want]
        assert len(got) == len(want) and all(map(same, got, want))
    with pytest.raises(PeerLost, match="EOF"):
        channel.recv(0)


@FUZZ
@given(st.data())
def test_a_channel_fed_damaged_frames_yields_values_or_frame_error(data: st.DataObject) -> None:
    pieces = data.draw(st.lists(st.builds(encoded, values, st.just(0)) | frame_like(), max_size=5))
    stream = b"".join(pieces)
    if data.draw(st.booleans()):  # cut anywhere: the peer died mid-frame
        stream = stream[: data.draw(st.integers(0, len(stream)))]
    channel = Channel(SplitSocket(data.draw(split(stream))), 0, 1)  # type: ignore[arg-type]
    got, error = drain(channel, 0)
    event(f"{type(error).__name__} after {min(len(got), 2)}+ values")
    assert isinstance(error, (FrameError, PeerLost)), repr(error)
    if isinstance(error, PeerLost):
        assert "EOF" in str(error)


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_damaged_frames_over_a_real_socket_pair(data: st.DataObject) -> None:
    pieces = data.draw(st.lists(st.builds(encoded, values, st.just(0)) | frame_like(), max_size=4))
    chunks = data.draw(split(b"".join(pieces)))
    reader, writer = socket.socketpair()
    reader.settimeout(30)

    def write() -> None:
        try:
            for chunk in chunks:
                writer.sendall(chunk)
        except OSError:  # the reader gave up on a bad frame and closed
            pass
        finally:
            writer.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=write)
    sender.start()
    channel = Channel(reader, 0, 1)
    try:
        _, error = drain(channel, 0)
    finally:
        channel.close()
        sender.join(30)
        writer.close()
    assert not sender.is_alive()
    assert isinstance(error, (FrameError, PeerLost)), repr(error)


def test_array_frames_must_announce_the_bytes_their_shape_needs() -> None:
    """A header whose length disagrees with dtype and shape is refused before any read
    (the Channel would otherwise read the wrong number of bytes into the array)."""
    header = framing.FrameHeader(framing.KIND_ARRAY, 0, 7, 3, 1)
    with pytest.raises(FrameError, match="announces 7 payload bytes"):
        framing.decode_array_meta(header, b"<f8" + struct.pack("!Q", 1))
    header = framing.FrameHeader(framing.KIND_ARRAY, 0, 16, 2, 1)
    with pytest.raises(FrameError, match="never sends raw"):
        framing.decode_array_meta(header, b"|O" + struct.pack("!Q", 2))

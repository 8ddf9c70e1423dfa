"""The frame format as bytes, and one Channel over a real socket pair."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

from fmi_client import PeerLost, framing
from fmi_client.channel import Channel


def test_array_frame_bytes() -> None:
    header, payload = framing.encode(np.arange(3, dtype="<i4").reshape(1, 3), tag=7)
    fixed = framing.decode_fixed(header[: framing.FIXED_SIZE])
    assert fixed == framing.FrameHeader(framing.KIND_ARRAY, 7, 12, 3, 2)
    assert header[framing.FIXED_SIZE :] == b"<i4" + struct.pack("!2Q", 1, 3)
    assert bytes(payload) == np.arange(3, dtype="<i4").tobytes()
    dtype, shape = framing.decode_array_meta(fixed, header[framing.FIXED_SIZE :])
    assert (dtype, shape) == ("<i4", (1, 3))


class Custom:
    """Not plain data: only pickle carries it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom)


def test_plain_objects_are_safe_encoded_others_pickled_and_bytes_sent_raw() -> None:
    header, payload = framing.encode(b"raw", tag=0)
    assert framing.decode_fixed(header).kind == framing.KIND_BYTES and payload == b"raw"
    header, payload = framing.encode({"a": [1, "x", None, (2.5,)]}, tag=-1)
    fixed = framing.decode_fixed(header)
    assert fixed.kind == framing.KIND_SAFE and fixed.tag == -1
    assert framing.decode_payload(fixed, payload) == {"a": [1, "x", None, (2.5,)]}
    header, payload = framing.encode(Custom(), tag=3)
    fixed = framing.decode_fixed(header)
    assert fixed.kind == framing.KIND_PICKLE and framing.decode_payload(fixed, payload) == Custom()
    with pytest.raises(TypeError, match=r"allow_pickle=True.*|secret"):
        framing.encode(Custom(), tag=3, allow_pickle=False)


def test_garbage_is_refused_with_an_explanation() -> None:
    with pytest.raises(framing.FrameError, match="out of step"):
        framing.decode_fixed(b"GET / HTTP/1.1\r\nHost: x"[: framing.FIXED_SIZE])


ODD_ARRAYS = [
    np.float64(3.5) * np.ones(()),  # 0-d
    np.empty((0, 4), dtype=np.int16),  # empty
    np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],  # not contiguous
    np.asfortranarray(np.arange(6).reshape(2, 3)),  # Fortran order
    np.array([True, False]),
    np.array([1 + 2j], dtype=np.complex128),
    np.arange(4, dtype=">u8"),  # big-endian
    np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),  # structured: pickled
    np.array([{"k": 1}, None], dtype=object),  # objects: pickled
    np.arange(300_000, dtype=np.float64),  # larger than the read buffer
]


def test_channel_round_trips_odd_arrays_and_queues_other_tags() -> None:
    a, b = socket.socketpair()
    # structured and object arrays are pickled: both ends trust each other
    left, right = Channel(a, 0, 1, allow_pickle=True), Channel(b, 1, 0, allow_pickle=True)

    def send_all() -> None:
        for i, array in enumerate(ODD_ARRAYS):
            left.send(array, tag=100)  # interleave a frame for another tag
            left.send(array, tag=i)

    sender = threading.Thread(target=send_all)  # the big array outgrows socket buffers
    sender.start()
    try:
        for i, array in enumerate(ODD_ARRAYS):
            got = right.recv(i)
            assert got.dtype == array.dtype and got.shape == array.shape
            assert np.array_equal(got, array) or array.dtype == object
        sender.join(timeout=30)
        assert not sender.is_alive()
        for array in ODD_ARRAYS:  # the tag-100 frames were queued in order
            assert right.recv(100).shape == array.shape
        into = np.empty(5, dtype=np.int64)
        left.send(np.arange(5, dtype=np.int64), 1)
        assert right.recv(1, out=into) is into and into.tolist() == [0, 1, 2, 3, 4]
    finally:
        left.close()
        right.close()
        sender.join(timeout=30)


def test_peer_closing_raises_peer_lost_naming_it() -> None:
    a, b = socket.socketpair()
    left, right = Channel(a, 0, 5), Channel(b, 5, 0)
    left.send(np.arange(10), 0)
    right.close()
    with pytest.raises(PeerLost, match="rank 5") as info:
        left.recv(0)
    assert info.value.rank == 5
    left.close()

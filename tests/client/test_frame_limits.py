"""Untrusted frames over a real socket pair: bounded before anything is allocated
(tracemalloc), pickles refused unread, dtypes checked, and TLS sockets in the Channel."""

from __future__ import annotations

import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmi_client import FrameTooLarge, PickleRefused
from fmi_client.channel import QUEUED_OVERHEAD, Channel
from fmi_client.framing import FIXED_STRUCT, KIND_ARRAY, KIND_BYTES, KIND_PICKLE, KIND_SAFE, MAGIC
from fmi_client.securelink import secure
from testbed.procs import REPO, python_env

MiB = 1 << 20


def header(kind: int, tag: int, length: int, dtype_len: int = 0, ndim: int = 0) -> bytes:
    return FIXED_STRUCT.pack(MAGIC, kind, tag, length, dtype_len, ndim)


def peak_while(fn: Any) -> tuple[BaseException, int]:
    """What ``fn`` raised, and the peak of memory traced while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as info:
            fn()
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", [KIND_BYTES, KIND_SAFE, KIND_PICKLE])
def test_a_frame_announcing_too_much_is_refused_before_allocation(kind):
    a, b = socket.socketpair()
    with a:
        channel = Channel(b, 0, 1, allow_pickle=True, max_message_bytes=MiB)
        a.sendall(header(kind, 0, 1 << 40))  # a terabyte announced, nothing follows
        error, peak = peak_while(lambda: channel.recv(0))
    assert isinstance(error, FrameTooLarge) and "max_message_bytes=1048576" in str(error)
    assert peak < MiB and channel.closed


def test_an_array_frame_announcing_too_much_is_refused_before_allocation():
    a, b = socket.socketpair()
    with a:
        channel = Channel(b, 0, 1, max_message_bytes=MiB)
        shape = (1 << 20, 1 << 10)  # 8 GiB of float64, consistent with the length
        a.sendall(header(KIND_ARRAY, 0, 8 << 30, 3, 2) + b"<f8" + struct.pack("!2Q", *shape))
        error, peak = peak_while(lambda: channel.recv(0))
    assert isinstance(error, FrameTooLarge) and peak < MiB


def test_frames_queued_for_an_unread_tag_are_bounded():
    """The reviewer's attack: lots under a tag nobody reads; the victim stays small."""
    a, b = socket.socketpair()
    channel = Channel(b, 0, 1, max_message_bytes=MiB)
    chunk = bytes(100 * 1024)

    def flood() -> None:
        try:
            for _ in range(40):  # 4 MB under tag 9, then what the victim wants
                a.sendall(header(KIND_BYTES, 9, len(chunk)) + chunk)
            a.sendall(header(KIND_BYTES, 0, 2) + b"ok")
        except OSError:
            pass  # the victim closed the link

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        error, peak = peak_while(lambda: channel.recv(0))
    finally:
        sender.join(10)
        a.close()
    assert isinstance(error, FrameTooLarge) and "tag 9" in str(error)
    assert peak < 2 * MiB


def test_queued_frames_within_the_bound_are_kept_and_released():
    a, b = socket.socketpair()
    with a:
        channel = Channel(b, 0, 1, max_message_bytes=MiB)
        for i in range(5):
            a.sendall(header(KIND_BYTES, 9, 3) + b"x%02d" % i)
        a.sendall(header(KIND_BYTES, 0, 2) + b"ok")
        assert channel.recv(0) == b"ok"
        assert channel._queued_bytes == 5 * (3 + QUEUED_OVERHEAD)
        assert [channel.recv(9) for _ in range(5)] == [b"x%02d" % i for i in range(5)]
        assert channel._queued_bytes == 0
        channel.close()


def test_a_pickle_frame_is_refused_unread(tmp_path: Path):
    mark = tmp_path / "mark"

    class Mark:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(mark), "w"))

    payload = pickle.dumps(Mark())
    a, b = socket.socketpair()
    with a:
        channel = Channel(b, 0, 1)
        a.sendall(header(KIND_PICKLE, 0, len(payload)) + payload)
        with pytest.raises(PickleRefused, match="allow_pickle=True"):
            channel.recv(0)
    assert channel.closed and not mark.exists()


OBJECT_ARRAY = """
import socket, struct
from fmi_client.channel import Channel
from fmi_client.framing import FIXED_STRUCT, MAGIC, KIND_ARRAY, FrameError
a, b = socket.socketpair(); dtype = b"|O"; payload = struct.pack("<Q", 0x4141414141414141)
a.sendall(FIXED_STRUCT.pack(MAGIC, KIND_ARRAY, 0, len(payload), len(dtype), 1) + dtype
          + struct.pack("!Q", 1) + payload)
try:
    Channel(b, 0, 1).recv(0)
except FrameError as exc:
    print("refused:", exc)
"""


def test_an_object_dtype_array_frame_is_refused_not_a_crash():
    done = subprocess.run(
        [sys.executable, "-c", OBJECT_ARRAY],
        cwd=REPO,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "'|O'" in done.stdout


def tls_channels() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    out: dict[str, socket.socket] = {}
    deadline = time.monotonic() + 10
    side = threading.Thread(
        target=lambda: out.update(
            b=secure(b, secret="s" * 20, pairing="p", my_rank=1, peer_rank=0, deadline=deadline)
        )
    )
    side.start()
    left = secure(a, secret="s" * 20, pairing="p", my_rank=0, peer_rank=1, deadline=deadline)
    side.join()
    return Channel(left, 0, 1, allow_pickle=True), Channel(out["b"], 1, 0, allow_pickle=True)


def test_tls_channels_exchange_large_arrays_full_duplex_and_poll_decrypted_bytes():
    left, right = tls_channels()
    big = np.arange(4 * MiB, dtype=np.float32)  # 16 MB each way at once
    got: dict[str, Any] = {}
    side = threading.Thread(target=lambda: got.update(r=right.exchange(big * 2, 5)))
    side.start()
    got["l"] = left.exchange(big, 5)
    side.join(60)
    np.testing.assert_array_equal(got["l"], big * 2)
    np.testing.assert_array_equal(got["r"], big)
    # an array's tail and a small frame in one TLS record: the array is read exactly, so
    # the small frame stays decrypted inside the TLS object, invisible to poll() on the fd
    array = np.arange(5000, dtype=np.float32)  # 20000 bytes: two records
    frame = header(KIND_ARRAY, 1, array.nbytes, 3, 1) + b"<f4" + struct.pack("!Q", 5000)
    left.sock.sendall(frame + array.tobytes() + header(KIND_BYTES, 2, 1) + b"b")
    np.testing.assert_array_equal(right.recv(1), array)
    assert right._start == right._end and right.sock.pending() > 0  # type: ignore[attr-defined]
    assert right.readable_now()
    right.pump()
    assert right.take_queued(2) == (2, b"b")
    left.close()
    right.close()

"""Channel.exchange full duplex over real loopback TCP: both directions, partial sends, failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from fmi_client import PeerLost
from fmi_client.channel import SMALL_EXCHANGE, Channel


def tcp_pair(bufsize: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets; ``bufsize`` shrinks both kernel buffers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bufsize:
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                a.setsockopt(socket.SOL_SOCKET, opt, bufsize)
                listener.setsockopt(socket.SOL_SOCKET, opt, bufsize)  # inherited by b
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    for sock in (a, b):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


@pytest.fixture
def channels() -> Iterator[Callable[..., tuple[Channel, Channel]]]:
    made: list[Channel] = []

    def make(bufsize: int | None = None, timeout: float | None = None) -> tuple[Channel, Channel]:
        a, b = tcp_pair(bufsize)
        for sock in (a, b):
            sock.settimeout(timeout)
        pair = Channel(a, 0, 1), Channel(b, 1, 0)
        made.extend(pair)
        return pair

    yield make
    for channel in made:
        channel.close()


def both(left: Callable[[], Any], right: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``left`` in a helper thread and ``right`` here; both results (or re-raise)."""
    result: list[Any] = [None]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result[0] = left()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        mine = right()
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return result[0], mine


def test_large_arrays_cross_both_ways_into_preallocated_buffers(channels) -> None:
    left, right = channels()
    to_right = np.arange(3 << 20, dtype=np.float32)  # 12 MiB, more than the socket buffers
    to_left = -np.arange(5 << 20, dtype=np.float64).reshape(1024, -1)  # 40 MiB
    into_left, into_right = np.empty_like(to_left), np.empty_like(to_right)
    threads_before = threading.active_count()
    got_left, got_right = both(
        lambda: left.exchange(to_right, -1, into_left),
        lambda: right.exchange(to_left, -1, into_right),
    )
    assert threading.active_count() == threads_before  # no sender thread left behind
    assert got_left is into_left and got_right is into_right
    assert np.array_equal(got_left, to_left) and np.array_equal(got_right, to_right)
    for channel in (left, right):  # blocking again, and still in step
        assert channel.sock.gettimeout() is None
    left.send(b"after", 3)
    assert right.recv(3) == b"after"


def test_partial_sends_with_tiny_buffers_and_frames_of_other_tags(channels) -> None:
    """4 KiB kernel buffers: every send() is partial; a user frame queued mid-exchange."""
    left, right = channels(bufsize=4096, timeout=30.0)
    big = np.arange(1 << 18, dtype=np.int32)  # 1 MiB: hundreds of partial sends
    pickled = {"blob": bytes(range(256)) * 1024}  # a large pickle frame the other way

    def left_side() -> Any:
        left.send("user message", 5)  # arrives before the exchange's frame
        return left.exchange(big, -1)

    got_left, got_right = both(left_side, lambda: right.exchange(pickled, -1))
    assert got_left == pickled and np.array_equal(got_right, big)
    assert right.recv(5) == "user message"  # queued during the exchange, in order
    assert left.sock.gettimeout() == 30.0 and right.sock.gettimeout() == 30.0


def test_small_exchanges_send_first_and_stay_blocking(channels) -> None:
    left, right = channels()
    small = np.ones(SMALL_EXCHANGE // 8, dtype=np.float64)
    got_left, got_right = both(
        lambda: left.exchange(small * 2, -1), lambda: right.exchange(small * 3, -1)
    )
    assert got_left.tolist() == (small * 3).tolist() and got_right.tolist() == (small * 2).tolist()


def test_silent_peer_in_an_exchange_raises_peer_lost_after_op_timeout(channels) -> None:
    left, right = channels(timeout=0.5)
    with pytest.raises(PeerLost) as info:
        left.exchange(np.zeros(64 << 20, dtype=np.uint8), -1)  # right never answers
    assert info.value.rank == 1 and "op_timeout=0.5" in str(info.value)
    assert left.closed  # half a frame went out: the channel cannot be used again
    assert right.sock.gettimeout() == 0.5


def test_peer_closing_mid_exchange_raises_peer_lost(channels) -> None:
    left, right = channels(timeout=30.0)

    def right_side() -> None:
        right.recv(-1)  # take all of left's frame, then hang up without sending ours
        right.close()

    def left_side() -> Any:
        return left.exchange(np.zeros(4 << 20, dtype=np.uint8), -1)

    with pytest.raises(PeerLost, match="rank 1"):
        both(right_side, left_side)

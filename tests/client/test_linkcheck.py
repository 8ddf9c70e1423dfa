"""The link check of fmi_client.linkcheck: its bytes (vectors and fuzz) and its run over
real sockets: completes both ways at once, leaves later user data alone, notices a peer
that stops carrying bytes (a stall) and one that does not speak the check."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmi_client.linkcheck import (
    MAX_CHECK_BYTES,
    CheckFailed,
    build_ack,
    build_offer,
    parse_ack,
    parse_offer_header,
    verify_link,
)


def test_offer_and_ack_bytes() -> None:
    assert build_offer(3) == b"FMIV\x01\x00\x00\x00\x00\x00\x00\x03\x00\x01\x02"
    assert build_offer(258)[12:] == bytes(range(256)) + b"\x00\x01"
    assert parse_offer_header(b"FMIV\x01\x00\x00\x00\x00\x01\x00\x00") == 65536
    assert build_ack(65536) == b"FMIA\x00\x01\x00\x00"
    parse_ack(b"FMIA\x00\x01\x00\x00", 65536)


@pytest.mark.parametrize(
    "header",
    [
        b"FMIV\x02\x00\x00\x00\x00\x00\x00\x03",  # another version
        b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b",  # user data, not a check
        b"FMIV\x01\x00\x00\x00\x00\x00\x00\x00",  # zero bytes
        b"FMIV\x01\x00\x00\x00\x01\x00\x00\x01",  # over MAX_CHECK_BYTES
    ],
)
def test_headers_that_are_not_a_check_are_refused(header: bytes) -> None:
    with pytest.raises(CheckFailed) as info:
        parse_offer_header(header)
    assert info.value.stalled is False


@pytest.mark.parametrize("length", [0, -1, MAX_CHECK_BYTES + 1])
def test_offer_sizes_out_of_range_are_our_mistake(length: int) -> None:
    with pytest.raises(ValueError, match="verify_bytes"):
        build_offer(length)


@given(st.binary(min_size=12, max_size=12))
def test_any_header_parses_or_raises_check_failed(header: bytes) -> None:
    try:
        length = parse_offer_header(header)
    except CheckFailed as exc:
        assert exc.stalled is False
    else:
        assert 0 < length <= MAX_CHECK_BYTES and header.startswith(b"FMIV\x01")


@given(st.binary(min_size=8, max_size=8), st.integers(1, MAX_CHECK_BYTES))
def test_any_ack_matches_or_raises_check_failed(data: bytes, sent: int) -> None:
    try:
        parse_ack(data, sent)
    except CheckFailed:
        assert data != build_ack(sent)
    else:
        assert data == build_ack(sent)


def run_both(a: socket.socket, b: socket.socket, sizes: tuple[int, int], within: float) -> list:
    """verify_link on both ends at once; each side's exception or None."""
    results: list = [None, None]

    def side(i: int, sock: socket.socket) -> None:
        try:
            verify_link(sock, sizes[i], time.monotonic() + within)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=side, args=(i, s)) for i, s in enumerate((a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


@pytest.mark.parametrize("sizes", [(65536, 65536), (1, 4 * 1024 * 1024), (1 << 20, 300)])
def test_check_completes_both_ways_and_leaves_user_data(sizes: tuple[int, int]) -> None:
    a, b = tcp_pair()
    with a, b:
        # small buffers: neither side could finish if sends blocked on the other's reads
        for sock in (a, b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        assert run_both(a, b, sizes, 20) == [None, None]
        assert a.getblocking() and b.getblocking()
        a.sendall(b"user data")
        b.settimeout(5)
        assert b.recv(100) == b"user data"


def test_a_peer_that_never_answers_is_a_stall() -> None:
    a, b = tcp_pair()
    with a, b:
        started = time.monotonic()
        with pytest.raises(CheckFailed) as info:
            verify_link(a, 65536, time.monotonic() + 0.5)
        assert info.value.stalled is True
        assert "stalled" in str(info.value)
        assert 0.5 <= time.monotonic() - started < 5


def test_a_peer_that_closes_midway_is_a_stall() -> None:
    a, b = tcp_pair()
    with a:
        b.sendall(build_offer(1000)[:500])
        b.close()
        with pytest.raises(CheckFailed, match="closed") as info:
            verify_link(a, 65536, time.monotonic() + 5)
        assert info.value.stalled is True


def test_a_peer_without_the_check_is_named() -> None:
    a, b = tcp_pair()
    with a, b:
        b.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(CheckFailed, match="verify_bytes") as info:
            verify_link(a, 65536, time.monotonic() + 5)
        assert info.value.stalled is False

"""The relay's memory across sessions: receivers that stop reading fill the write
buffers, and --relay-max-buffered holds every sender once their sum is over the cap;
when the receivers read again, every byte arrives, in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time

import pytest

from rendezvous.server import RendezvousServer
from tcpunch.relay import RelayRequest, derive_session, encode_relay_request
from tests.server.test_relay import connect_both, in_thread, recv_all

SESSIONS = 6
PER_SESSION = 12 << 20  # far more than the kernel's buffers and one write buffer hold
READ_CHUNK = 256 << 10  # what one read of the loop takes at most


def _pattern(index: int) -> bytes:
    return bytes((index * 7 + i) % 251 for i in range(PER_SESSION // 64)) * 64


async def test_buffers_of_all_sessions_stay_under_the_global_cap(make_server, unique) -> None:
    cap = 1 << 20
    server: RendezvousServer = await make_server(relay_max_buffered=cap)
    pairs = [await in_thread(lambda: connect_both(unique(), server.port)) for _ in range(SESSIONS)]
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, server.relay.buffered())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    senders = []
    for index, (a, _b) in enumerate(pairs):
        a.settimeout(30)
        thread = threading.Thread(target=a.sendall, args=(_pattern(index),), daemon=True)
        thread.start()
        senders.append(thread)
    try:
        # nobody reads: the senders fill the kernel's buffers, then the relay's
        await asyncio.sleep(2.0)
        assert peak <= 2 * cap + SESSIONS * READ_CHUNK, (peak, cap)
        assert server.relay.metrics.held >= 1

        def read_all() -> list[bool]:
            good = []
            for index, (_a, b) in enumerate(pairs):
                b.settimeout(30)
                good.append(recv_all(b, PER_SESSION) == _pattern(index))
            return good

        assert await in_thread(read_all) == [True] * SESSIONS
        deadline = time.monotonic() + 10
        for thread in senders:
            await in_thread(lambda t=thread: t.join(max(0.0, deadline - time.monotonic())))
            assert not thread.is_alive()
        assert not server.relay.memory.held and peak <= 2 * cap + SESSIONS * READ_CHUNK
    finally:
        stop.set()
        await sampler
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.parametrize("receiver_reads", [False, True])
async def test_a_closed_session_keeps_its_place_until_its_last_bytes_are_out(
    make_server, unique, receiver_reads: bool
) -> None:
    """Both ends half-close while B has read nothing: the session ends "closed" with
    bytes still in the relay's write buffer to B. That end keeps its place in the caps
    until they are out (B reads them all, then EOF), or is reset once its buffer has not
    shrunk for the idle timeout: a receiver that never reads cannot free the caps and
    leave the descriptor and its buffer behind, session after session."""
    server: RendezvousServer = await make_server(
        relay_max_per_ip=2, relay_idle_timeout=1.0, relay_max_buffered=0
    )
    # A is never paused, so the bytes pile up in the relay's buffer to B
    server.relay.limits = dataclasses.replace(server.relay.limits, high_water=64 << 20)
    a, b = await in_thread(lambda: connect_both(unique(), server.port))
    payload = _pattern(1)
    with a, b:
        await in_thread(lambda: a.sendall(payload))
        a.shutdown(socket.SHUT_WR)
        b.shutdown(socket.SHUT_WR)
        for _ in range(100):
            if not server.relay.sessions:
                break
            await asyncio.sleep(0.01)
        assert not server.relay.sessions
        assert server.relay.per_ip["127.0.0.1"] == 1  # B's end, still flushing
        assert len(server.relay.flushing) == 1

        def two_more() -> list[bytes]:
            name = unique().encode()
            request = encode_relay_request(RelayRequest(name, derive_session(name)))
            with contextlib.ExitStack() as stack:
                replies = []
                for _ in range(2):  # the first stays open (waiting) while the second asks
                    sock = stack.enter_context(
                        socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    )
                    sock.sendall(request)
                    replies.append(recv_all(sock, 2))
                return replies

        # one more end fits beside it (it waits), the next is over the per-IP cap
        assert await in_thread(two_more) == [b"\x01\x00", b"\x03\x03"]
        b.settimeout(10)
        if receiver_reads:
            assert await in_thread(lambda: recv_all(b, len(payload) + 1)) == payload
            assert "flush_stalled" not in server.relay.metrics.ends
        else:
            await asyncio.sleep(1.6)  # the idle timeout, and a tick
            with pytest.raises(ConnectionResetError):
                await in_thread(lambda: recv_all(b, len(payload)))
            assert server.relay.metrics.ends["flush_stalled"] == 1
        for _ in range(100):
            if not server.relay.per_ip:
                break
            await asyncio.sleep(0.01)
        assert not server.relay.flushing and not server.relay.per_ip

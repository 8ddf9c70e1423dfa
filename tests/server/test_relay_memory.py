"""The relay's memory across sessions: receivers that stop reading fill the write
buffers, and --relay-max-buffered holds every sender once their sum is over the cap;
when the receivers read again, every byte arrives, in order."""

from __future__ import annotations

import asyncio
import threading
import time

from rendezvous.server import RendezvousServer
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

"""Relay ends inside the descriptor budget: a server process under a low open-files
limit, flooded with waiting relay ends from several loopback addresses, refuses the ones
beyond its relay cap with a reason, keeps /livez answering and never fails an accept()."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from tcpunch.relay import (
    REPLY_SIZE,
    RelayRequest,
    RelayStatus,
    decode_relay_reply,
    derive_session,
    encode_relay_request,
)
from tests.server.abuse import (
    assert_json_lines_only,
    fds,
    http_get,
    metrics,
    raise_own_nofile,
    rejected,
    server_process,
    stop_and_read,
)
from tests.server.test_relay import connect_both

SOURCES = [f"127.0.0.{i}" for i in range(2, 6)]


async def _end(port: int, i: int, held: list[asyncio.StreamWriter], gate: asyncio.Semaphore) -> str:
    """One relay end from one of SOURCES; what the server answered."""
    async with gate:
        return await _ask(port, i, held)


async def _ask(port: int, i: int, held: list[asyncio.StreamWriter]) -> str:
    name = f"budget_{os.getpid()}_{i}".encode()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCES[i % 4], 0)), 10
        )
    except (OSError, TimeoutError):
        return "connect_failed"
    held.append(writer)
    writer.write(encode_relay_request(RelayRequest(name, derive_session(name))))
    try:
        data = await asyncio.wait_for(reader.readexactly(REPLY_SIZE), 10)
    except asyncio.IncompleteReadError as exc:
        return "closed" if not exc.partial else "short"
    except (OSError, TimeoutError):
        return "no_answer"
    reply = decode_relay_reply(data)
    if reply.status is RelayStatus.WAITING_FOR_PEER:
        return "waiting"
    assert reply.refusal is not None
    return reply.refusal.name.lower()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_waiting_relay_ends_fit_the_descriptor_budget(loop: str) -> None:
    nofile, ends = 400, 400
    raise_own_nofile(ends + 200)
    with server_process("--loop", loop, "--discovery-port", "0", nofile=nofile) as (proc, rec):
        relay = rec["relay_max_sessions"]
        planned = rec["max_connections"] + rec["max_http_connections"] + 2 * relay
        assert planned + rec["fd_reserve"] + rec["fds_at_start"] <= nofile, rec
        assert 1 <= relay < 1000  # lowered to fit, and said so in the listening line

        async def flood() -> None:
            held: list[asyncio.StreamWriter] = []
            try:
                # at most 32 connects in flight: asyncio's loop accepts a whole burst before
                # any cap can refuse one (its accept batch is the listen backlog), which the
                # --fd-reserve (64) covers only up to its size
                gate = asyncio.Semaphore(32)
                answers = await asyncio.gather(
                    *(_end(rec["port"], i, held, gate) for i in range(ends))
                )
                counts = {a: answers.count(a) for a in set(answers)}
                m = await asyncio.to_thread(metrics, rec["http_port"])
                livez = await asyncio.to_thread(http_get, rec["http_port"], "/livez")
                assert livez == (200, b"ok\n")
                assert fds(proc.pid) < nofile
                assert rejected(m, "accept_failed") == 0, counts
                # every end answered: waiting, refused with a reason, or closed and counted
                assert set(counts) <= {"waiting", "server_full", "closed"}, counts
                assert counts.get("waiting", 0) == m[("rendezvous_relay_waiting", ())] <= relay
                full = m[("rendezvous_relay_refused_total", (("reason", "server_full"),))]
                assert counts.get("server_full", 0) == full >= 1, counts
                assert counts.get("closed", 0) == rejected(m, "connection_cap"), counts
            finally:
                for writer in held:
                    writer.close()
                for writer in held:
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

        asyncio.run(flood())
        # the waiting ends hung up: the relay pairs again
        for attempt in range(50):
            try:
                a, b = connect_both(f"after_{os.getpid()}_{attempt}", rec["port"], timeout=5)
            except Exception:  # refused while the hung-up ends are still being counted out
                if attempt == 49:
                    raise
                continue
            with a, b:
                a.sendall(b"ping")
                assert b.recv(4) == b"ping"
            break
        assert_json_lines_only(stop_and_read(proc))

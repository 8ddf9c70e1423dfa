"""What a public port meets, against the server as a real process on loopback: reset
floods, thousands of idle HTTP connections, malformed HTTP, a stderr nobody reads, a flood
of hung-up v2 waits. Nothing may print a traceback, drop silently, freeze the loop or grow
memory without bound; every refusal is counted under a reason.

The limits are set through RENDEZVOUS_* variables, so these tests also run (and fail for
the right reason) against a server that does not know them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from tcpunch import V2_RESPONSE_SIZE, Status, decode_v2_response, encode_v2_request
from tests.server.abuse import (
    assert_json_lines_only,
    fds,
    http_get,
    metrics,
    pair_many,
    raise_own_nofile,
    reading_stderr,
    rejected,
    reset_flood,
    rss_bytes,
    server_process,
    stop_and_read,
    v1_pair,
    wait_until,
)
from tests.server.serverproc import clean_env


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_connect_then_reset_flood_is_closed_counted_and_quiet(loop):
    flood, http_flood = 2000, 300
    with server_process("--loop", loop) as (proc, rec):
        baseline = fds(proc.pid)
        reset_flood(rec["port"], flood)
        reset_flood(rec["http_port"], http_flood)
        # every descriptor given back within a second of the last reset
        wait_until(lambda: fds(proc.pid) <= baseline, 1.0, "fds back to baseline")
        m = metrics(rec["http_port"])
        resets, empty = rejected(m, "reset"), rejected(m, "empty")
        assert resets >= 1 and resets + empty == flood, (resets, empty)
        assert m[("rendezvous_connections_total", (("protocol", "unknown"),))] == flood
        asyncio.run(v1_pair(rec["port"], f"after_resets_{os.getpid()}".encode()))
        lines = assert_json_lines_only(stop_and_read(proc))
    # at INFO the resets are counted, not logged
    assert not [line for line in lines if line.get("reason") == "reset"]


def test_idle_http_flood_is_capped_timed_out_and_livez_still_answers():
    idle, nofile = 5000, 1024
    raise_own_nofile(idle + 500)
    env = clean_env(RENDEZVOUS_HTTP_TIMEOUT="2")
    with server_process("--loop", "uvloop", env=env, nofile=nofile) as (proc, rec):
        baseline = fds(proc.pid)
        held: list[socket.socket] = []
        most = 0
        try:
            for i in range(idle):
                sock = socket.create_connection(("127.0.0.1", rec["http_port"]), timeout=10)
                held.append(sock)
                if i % 250 == 0:
                    most = max(most, fds(proc.pid))
            most = max(most, fds(proc.pid))
            assert most < nofile, most  # never at the limit: nothing fails at accept()
            # the operator still gets through, and pairing is unaffected
            assert http_get(rec["http_port"], "/livez") == (200, b"ok\n")
            asyncio.run(v1_pair(rec["port"], f"during_http_flood_{os.getpid()}".encode()))
            m = metrics(rec["http_port"])
            assert rejected(m, "http_evicted") >= idle - rec["max_http_connections"]
            assert m[("rendezvous_http_connections", ())] <= rec["max_http_connections"]
            # a slow client trickling its headers is cut off by the same timeout
            slow = socket.create_connection(("127.0.0.1", rec["http_port"]), timeout=10)
            held.append(slow)
            slow.sendall(b"GET /livez HTTP/1.1\r\n")
            start = time.monotonic()
            slow.settimeout(0.3)
            closed = False
            while not closed and time.monotonic() - start < 6:
                try:
                    closed = slow.recv(100) == b""
                except TimeoutError:
                    slow.sendall(b"X-Slow: 1\r\n")
            assert closed and time.monotonic() - start < 4
            # the idle ones the cap kept are closed by the timeout, while we still hold ours
            wait_until(lambda: fds(proc.pid) <= baseline + 2, 6, "idle HTTP connections closed")
        finally:
            for sock in held:
                sock.close()
        assert_json_lines_only(stop_and_read(proc))
    # the caps in force, in the listening line, fit below the limit with the reserve
    assert rec["nofile"] == nofile
    budget = rec["max_connections"] + rec["max_http_connections"] + rec["fd_reserve"]
    assert budget + rec["fds_at_start"] <= nofile


def test_tcp_connections_beyond_the_budget_are_refused_and_counted_not_dropped():
    nofile, idle = 256, 600
    with server_process("--loop", "asyncio", nofile=nofile) as (proc, rec):
        cap = min(rec["max_connections"], nofile)
        held: list[socket.socket] = []
        try:
            for _ in range(idle):  # silent clients: each holds a descriptor until refused
                held.append(socket.create_connection(("127.0.0.1", rec["port"]), timeout=10))
            wait_until(
                lambda: rejected(metrics(rec["http_port"]), "connection_cap") == idle - cap,
                10,
                "every connection beyond the cap refused and counted",
            )
            assert cap + rec["max_http_connections"] + rec["fd_reserve"] < nofile
            assert fds(proc.pid) < nofile
            assert http_get(rec["http_port"], "/livez") == (200, b"ok\n")
            assert http_get(rec["http_port"], "/readyz")[0] == 503  # full, and says so
        finally:
            for sock in held:
                sock.close()
        # the held ones drain away and pairing works again
        wait_until(lambda: http_get(rec["http_port"], "/readyz")[0] == 200, 10, "ready again")
        asyncio.run(v1_pair(rec["port"], f"after_cap_{os.getpid()}".encode()))
        assert_json_lines_only(stop_and_read(proc))


MALFORMED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello
    b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",  # an over-long request line
    b"GET /livez HTTP/1.1\r\nBad Header\r\n\r\n",  # a header without a colon
    b"GET /livez HTTP/9.9.9\r\n\r\n",  # a bad version
    b"GET /livez HTTP/1.1\r\nX: " + b"b" * 10000 + b"\r\n\r\n",  # an over-long header
]


def test_malformed_http_is_one_counted_rate_limited_line_each_and_no_traceback():
    rounds = 60
    with server_process() as (proc, rec):
        for _ in range(rounds):
            for payload in MALFORMED:
                with socket.create_connection(("127.0.0.1", rec["http_port"]), timeout=5) as s:
                    s.sendall(payload)
                    s.settimeout(5)
                    answer = b""
                    with_data = True
                    while with_data:
                        try:
                            chunk = s.recv(4096)
                        except ConnectionResetError:
                            break
                        answer += chunk
                        with_data = bool(chunk)
                    assert answer == b"" or answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), (
                        answer[:100]
                    )
        m = metrics(rec["http_port"])
        assert http_get(rec["http_port"], "/livez")[0] == 200
        lines = assert_json_lines_only(stop_and_read(proc))
    counted = rejected(m, "http_malformed") + rejected(m, "http_error")
    assert counted == rounds * len(MALFORMED)
    refused = [line for line in lines if line.get("event") == "refused"]
    suppressed = [line for line in lines if line.get("event") == "suppressed"]
    assert 1 <= len(refused) < counted / 2  # rate-limited ...
    logged = len(refused) + sum(line["suppressed"] for line in suppressed)
    assert logged == counted  # ... and the summary lines account for the rest


def test_a_stderr_nobody_reads_never_freezes_pairing():
    pairings, junk = 1500, 1500
    env = clean_env(RENDEZVOUS_LOG_BUFFER="65536", RENDEZVOUS_LOG_LEVEL="DEBUG")
    # The listening line is read; after it nobody reads the pipe (64 KiB fills quickly).
    with server_process(env=env) as (proc, rec):
        port = rec["port"]

        async def flood() -> None:
            async def one_junk(i: int) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"junk\x01" + str(i).encode())
                await asyncio.wait_for(reader.read(), 10)
                writer.close()

            async def all_junk() -> None:
                for start in range(0, junk, 50):
                    await asyncio.gather(*(one_junk(i) for i in range(start, start + 50)))

            await asyncio.gather(all_junk(), pair_many(port, "unread", pairings))

        asyncio.run(asyncio.wait_for(flood(), 120))
        assert http_get(rec["http_port"], "/livez") == (200, b"ok\n")
        m = metrics(rec["http_port"])
        assert m[("rendezvous_log_dropped_total", ())] > 0
        assert rejected(m, "junk") == junk
        assert m[("rendezvous_pairings_total", (("protocol", "v1"),))] == pairings
        proc.terminate()  # exits although its stderr is still full
        assert proc.wait(timeout=20) == 0


def test_a_flood_of_hung_up_v2_waits_keeps_tokens_and_memory_bounded():
    per_ip_cap, cap, sources, waits = 500, 1500, 4, 40_000
    env = clean_env(
        RENDEZVOUS_MAX_TOKENS=str(cap),
        RENDEZVOUS_MAX_TOKENS_PER_IP=str(per_ip_cap),
    )
    with server_process(env=env) as (proc, rec), reading_stderr(proc):
        port = rec["port"]

        async def hung_up_waits(count: int, stem: str) -> None:
            async def one(i: int) -> None:
                source = f"127.0.0.{1 + i % sources}"
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
                writer.write(encode_v2_request(f"{stem}_{i}"))
                response = decode_v2_response(await reader.readexactly(V2_RESPONSE_SIZE))
                assert response.status is Status.WAITING and response.token
                writer.close()

            for start in range(0, count, 100):
                batch = range(start, min(count, start + 100))
                await asyncio.wait_for(asyncio.gather(*(one(i) for i in batch)), 30)

        asyncio.run(hung_up_waits(5000, "warm"))  # the allocator's pools, warmed up
        wait_until(lambda: metrics(rec["http_port"])[("rendezvous_waiting_clients", ())] == 0,
                   10, "warm-up waiters gone")  # fmt: skip
        before = rss_bytes(proc.pid)
        asyncio.run(hung_up_waits(waits, f"flood_{os.getpid()}"))
        wait_until(lambda: metrics(rec["http_port"])[("rendezvous_waiting_clients", ())] == 0,
                   10, "flood waiters gone")  # fmt: skip
        grown = rss_bytes(proc.pid) - before
        m = metrics(rec["http_port"])
        proc.terminate()
        assert proc.wait(timeout=20) == 0
    # unbounded, 40,000 tokens hold ~15 MB for their grace; bounded, the flood adds little
    print(f"RSS grew {grown / 2**20:.1f} MiB")  # shown with -s
    assert grown < 6 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"
    assert m[("rendezvous_reconnect_tokens", ())] <= cap
    dropped = sum(
        m[("rendezvous_tokens_dropped_total", (("cap", c),))] for c in ("global_cap", "per_ip_cap")
    )
    assert dropped >= waits + 5000 - cap

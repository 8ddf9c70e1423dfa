"""The bounds behind the hardening, piece by piece: token caps (and their memory), the
descriptor budget, the log writer's bounded queue, rate-limited warnings, and the metrics
that make them visible."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
import tracemalloc

from prometheus_client.parser import text_string_to_metric_families

from rendezvous.fdbudget import plan
from rendezvous.logs import BufferedLineHandler, UtcJsonLineFormatter, log_event
from rendezvous.logwriter import LineWriter
from rendezvous.ratelimit import LogRateLimit
from rendezvous.room import Room, Waiting
from rendezvous.settings import Settings
from tcpunch import Endpoint, Status
from tests.server.wire import connect, v2, wait_for


def hang_up(room: Room, name: str, ip: str, now: float) -> str:
    """A v2 wait from ``ip`` that left at once; returns its token (now in its grace)."""
    outcome = room.arrive(name.encode(), object(), Endpoint(ip, 1), "v2", now)
    assert isinstance(outcome, Waiting)
    room.leave(outcome.waiter, now)
    assert outcome.waiter.token is not None
    return outcome.waiter.token


def test_tokens_beyond_the_global_cap_drop_the_oldest_first():
    room: Room[object] = Room(max_tokens=3, max_tokens_per_ip=100, token_grace=60)
    tokens = [hang_up(room, f"n{i}", f"10.0.0.{i}", float(i)) for i in range(5)]
    assert room.token_count == 3 and room.tokens_dropped["global_cap"] == 2
    # the two oldest are gone, the newest still resume
    assert room.arrive(b"n0", object(), Endpoint("10.0.0.0", 1), "v2", 5, tokens[0]).reason
    resumed = room.arrive(b"n4", object(), Endpoint("10.0.0.4", 1), "v2", 5, tokens[4])
    assert isinstance(resumed, Waiting) and room.graced_token_count == 2


def test_tokens_beyond_the_per_ip_cap_drop_that_addresses_oldest():
    room: Room[object] = Room(max_tokens=100, max_tokens_per_ip=2, token_grace=60)
    mine = [hang_up(room, f"m{i}", "10.0.0.1", float(i)) for i in range(4)]
    other = hang_up(room, "o", "10.0.0.2", 4)
    assert room.tokens_dropped == {"global_cap": 0, "per_ip_cap": 2}
    assert room.token_count == 3
    for token, name, kept in ((mine[0], b"m0", False), (mine[3], b"m3", True)):
        outcome = room.arrive(name, object(), Endpoint("10.0.0.1", 1), "v2", 5, token)
        assert isinstance(outcome, Waiting) is kept
    assert isinstance(room.arrive(b"o", object(), Endpoint("10.0.0.2", 1), "v2", 5, other), Waiting)


def test_purge_takes_the_expired_front_only():
    room: Room[object] = Room(token_grace=10)
    for i in range(4):
        hang_up(room, f"p{i}", "10.0.0.1", float(i))
    assert room.purge_tokens(11.5) == 2 and room.token_count == 2
    assert room.purge_tokens(100) == 2 and room.token_count == 0 and room.graced_token_count == 0


def test_memory_per_token_in_its_grace_is_what_the_readme_says():
    """README: about 0.5 kB per token in grace, so --max-tokens 100000 bounds them ~50 MB."""
    room: Room[object] = Room(max_tokens=1_000_000, max_tokens_per_ip=1_000_000)
    count = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            hang_up(room, f"memory_{i:08d}", f"10.{i % 200}.0.1", 0.0)
        per_token = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert 150 < per_token < 600, per_token


def test_the_descriptor_budget_fits_both_caps_below_the_limit():
    asked = Settings(max_connections=15000, max_http_connections=256, fd_reserve=64)
    roomy = plan(asked, 1 << 20, 20)
    assert (roomy.tcp, roomy.http) == (15000, 256) and not roomy.lowered(asked)
    tight = plan(asked, 1024, 20)
    assert tight.lowered(asked) and tight.tcp + tight.http + 2 * tight.relay + 20 + 64 <= 1024
    assert 8 <= tight.http <= 256 and tight.tcp > 5 * tight.http
    assert 1 <= tight.relay < asked.relay_max_sessions and 2 * tight.relay >= (1024 - 84) // 4
    no_http = plan(Settings(http_port=None, max_connections=15000), 1024, 20)
    assert no_http.http == 0 and no_http.tcp + 2 * no_http.relay == 1024 - 20 - 64
    no_relay = plan(Settings(http_port=None, max_connections=15000, relay=False), 1024, 20)
    assert no_relay.relay == 0 and no_relay.tcp == 1024 - 20 - 64
    # relay ends only: the relay gets what the TCP cap does not need
    few = plan(Settings(max_connections=50, relay_max_sessions=1000), 1024, 20)
    assert few.tcp == 50 and few.lowered(asked) and 50 + few.http + 2 * few.relay <= 1024 - 84
    assert plan(asked, None, 20).tcp == 15000  # no limit at all


def test_a_sink_that_blocks_drops_whole_batches_and_counts_their_lines():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    writer = LineWriter(stream, max_pending=4096)
    line = json.dumps({"event": "paired", "pad": "x" * 200}) + "\n"
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(b"".join(iter_pipe(read_end))), daemon=True)
    try:
        start = time.monotonic()
        kept = sum(writer.put(line * 10, 10) for _ in range(200))  # ~430 kB, pipe 64 kB
        assert time.monotonic() - start < 1.0  # never waits for the sink
        assert writer.dropped == (200 - kept) * 10 and writer.dropped > 0
        reader.start()  # the sink takes lines again
        writer.put(line, 1)  # the next batch after a drop carries the report
        assert writer.wait(10)
    finally:
        writer.close(1)
        stream.close()
        reader.join(timeout=10)
        os.close(read_end)
    lines = [json.loads(x) for x in bytes(got).splitlines()]
    reports = [x["dropped"] for x in lines if x["event"] == "log_dropped"]
    assert sum(reports) == writer.dropped  # every dropped line reported
    assert len(lines) - len(reports) == kept * 10 + 1  # the rest arrived whole


def iter_pipe(fd: int):
    while chunk := os.read(fd, 1 << 16):
        yield chunk


def test_warnings_are_rate_limited_per_reason_with_a_summary(caplog):
    now = [0.0]
    log = logging.getLogger("rendezvous.test_limits")
    limit = LogRateLimit(log, lambda: now[0], burst=3, interval=1.0)
    caplog.set_level(logging.WARNING, logger=log.name)
    allowed = [limit.allow("junk") for _ in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert limit.allow("oversized")  # another reason has its own budget
    now[0] = 1.5
    limit.summaries()
    (summary,) = [r for r in caplog.records if getattr(r, "event", "") == "suppressed"]
    assert summary.reason == "junk" and summary.suppressed == 7 and summary.logged == 3
    assert limit.allow("junk")  # a new window


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(server) -> dict[tuple[str, tuple], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return samples(raw.split(b"\r\n\r\n", 1)[1].decode())


async def test_metrics_show_the_process_drains_and_every_protocol(make_server, unique):
    server = await make_server()
    bad_v2 = await connect(server.port, b"name\0" + b"z" * 200)  # malformed v2
    assert (await bad_v2.read_rest())[0] == Status.ERROR
    waiter = await v2(server.port, unique())
    await waiter.read_v2()
    await wait_for(lambda: len(server.room) == 1)
    before = await scrape(server)
    for name in ("open_fds", "max_fds", "resident_memory_bytes", "cpu_seconds_total"):
        assert before[(f"process_{name}", ())] > 0, name
    assert before[("rendezvous_connections_total", (("protocol", "v2"),))] == 2
    assert before[("rendezvous_reconnect_tokens", ())] == 1
    await server.drain(timeout=1)
    assert (await waiter.read_v2()).status is Status.TIMEOUT
    assert server.metrics.drained == 1 and server.metrics.expired == 0
    await waiter.close()
    await bad_v2.close()


async def test_a_failed_accept_is_a_counted_refusal_and_one_line(make_server, caplog):
    """What asyncio reports when accept() finds no descriptor left (it retries later)."""
    import errno

    server = await make_server()
    caplog.set_level(logging.ERROR, logger="rendezvous")
    loop = asyncio.get_running_loop()
    assert loop.get_exception_handler() == server._on_loop_error
    context = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }
    for _ in range(50):
        loop.call_exception_handler(context)
    assert server.metrics.rejected["accept_failed"] == 50
    lines = [r for r in caplog.records if getattr(r, "event", "") == "accept_failed"]
    assert 1 <= len(lines) <= 10 and not any(r.exc_info for r in lines)  # rate-limited
    try:
        raise RuntimeError("a bug of ours")
    except RuntimeError as bug:
        loop.call_exception_handler({"message": "Exception in callback", "exception": bug})
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "loop_error"]
    assert "a bug of ours" in line.traceback and "accept_failed" not in line.traceback
    await server.stop()
    # The loop's own handling is back (errors reach loop.default_exception_handler), but
    # for asyncio's late accept retry on our closed listener, which stays quiet.
    assert loop.get_exception_handler() != server._on_loop_error
    seen: list[dict] = []
    other = RuntimeError("another error, after the stop")
    loop.default_exception_handler = seen.append  # type: ignore[method-assign]
    try:
        loop.call_exception_handler({"message": "Exception in callback f()", "exception": other})
        late_retry = ValueError("Invalid file descriptor: -1")
        loop.call_exception_handler(
            {
                "message": "Exception in callback BaseSelectorEventLoop._start_serving(...)",
                "exception": late_retry,
            }
        )
    finally:
        del loop.default_exception_handler
    assert [c["exception"] for c in seen] == [other]


async def test_the_writer_thread_gets_batches_not_lines():
    """The hot path (a paired line per pairing) stays an append: one hand-off per batch."""
    import io

    stream = io.StringIO()
    handler = BufferedLineHandler(stream, background=True, interval=0.05)
    handler.setFormatter(
        UtcJsonLineFormatter(
            "{asctime}{levelname}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "message": "msg"},
        )
    )
    log = logging.getLogger("rendezvous.test_limits.batches")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for i in range(2000):
            log_event(log, logging.INFO, "paired", {"event": "paired", "n": i})
        assert handler.writer is not None and handler.writer.batches <= 4  # capacity 512
        await asyncio.sleep(0.2)
        assert handler.writer.wait(5)
        assert [json.loads(x)["n"] for x in stream.getvalue().splitlines()] == list(range(2000))
        assert handler.writer.batches <= 5
    finally:
        handler.close()
        log.handlers.clear()

"""The JSON log lines: same output as python-json-logger's formatter, written in batches
that never lose or split a line (timer, WARNING, capacity, no loop, close, exit)."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from pythonjsonlogger.json import JsonFormatter

from rendezvous.logs import BufferedLineHandler, JsonLineFormatter, configure_logging

FORMAT = {
    "fmt": "{asctime}{levelname}{message}",
    "style": "{",
    "rename_fields": {"asctime": "time", "levelname": "level", "message": "msg"},
}
PAIRED = {
    "event": "paired",
    "pairing": "p\u00e9_1",
    "protocol": "mixed",
    "waiter": "127.0.0.1:40000",
    "newcomer": "127.0.0.1:40001",
    "wait_seconds": 0.000123,
}


class CountingStream(io.StringIO):
    """A real text stream that also counts write() calls (one per batch expected)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


def record(msg: object = "paired", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    return logging.getLogger("t").makeRecord("t", level, "f.py", 1, msg, (), None, extra=extra)


@pytest.fixture
def logger(request: pytest.FixtureRequest):
    """A private logger per test (the ``rendezvous`` logger belongs to the server)."""
    log = logging.getLogger(f"test_logs.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()


def attach(log: logging.Logger, **kwargs: object) -> tuple[BufferedLineHandler, CountingStream]:
    stream = CountingStream()
    handler = BufferedLineHandler(stream, **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(JsonLineFormatter(**FORMAT))
    log.addHandler(handler)
    return handler, stream


async def written(stream: CountingStream, count: int, deadline: float = 10.0) -> list[dict]:
    """Let the loop run until ``count`` lines are in ``stream`` (bounded)."""
    end = time.monotonic() + deadline
    while len(stream.getvalue().splitlines()) < count:
        assert time.monotonic() < end, f"only {stream.getvalue().count(chr(10))} lines written"
        await asyncio.sleep(0.005)
    return stream.lines()


# -- the formatter ------------------------------------------------------------------------


def test_formatter_output_is_json_formatters():
    ours, theirs = JsonLineFormatter(**FORMAT), JsonFormatter(**FORMAT)
    cases = [
        record(**PAIRED),
        record("a %s message", level=logging.WARNING),
        record({"event": "as_dict", "n": 1}),
        record("no extras"),
    ]
    try:
        raise ValueError("boom")
    except ValueError:
        crash = record("internal error", level=logging.ERROR, event="internal_error")
        crash.exc_info = sys.exc_info()
    cases.append(crash)
    for rec in cases:
        mine, ref = ours.format(rec), theirs.format(rec)
        assert mine == ref  # byte for byte: same fields, order, separators and time
        assert json.loads(mine)["msg"] == rec.getMessage() or isinstance(rec.msg, dict)
    assert "ValueError: boom" in json.loads(ours.format(crash))["exc_info"]


def test_cached_time_follows_the_clock():
    formatter = JsonLineFormatter(**FORMAT)
    first, later = record(), record()
    later.created = first.created + 3601.5
    later.msecs = 500.0
    plain = logging.Formatter()
    for rec in (first, later, first):
        assert formatter.formatTime(rec) == plain.formatTime(rec)
    assert formatter.formatTime(first, "%Y") == time.strftime("%Y", time.localtime(first.created))


def test_generic_options_still_work():
    formatter = JsonLineFormatter(**FORMAT, static_fields={"service": "rendezvous"})
    out = json.loads(formatter.format(record(**PAIRED)))
    assert out["service"] == "rendezvous" and out["pairing"] == PAIRED["pairing"]


# -- the handler --------------------------------------------------------------------------


async def test_info_lines_wait_for_the_timer_and_go_out_in_one_write(logger):
    _, stream = attach(logger, interval=0.05)
    for i in range(20):
        logger.info("paired", extra={**PAIRED, "pairing": f"n{i}"})
    assert stream.getvalue() == ""  # buffered, not yet written
    lines = await written(stream, 20)
    assert [line["pairing"] for line in lines] == [f"n{i}" for i in range(20)]
    assert stream.writes == 1


async def test_warning_writes_everything_before_it_at_once(logger):
    _, stream = attach(logger, interval=60)
    logger.info("paired", extra=PAIRED)
    logger.warning("refused", extra={"event": "refused", "reason": "junk"})
    assert [line["event"] for line in stream.lines()] == ["paired", "refused"]
    assert stream.writes == 1


async def test_a_full_buffer_is_written_at_once(logger):
    handler, stream = attach(logger, interval=60, capacity=8)
    for i in range(20):
        logger.info("paired", extra={**PAIRED, "pairing": f"n{i}"})
    assert len(stream.lines()) == 16 and stream.writes == 2
    handler.flush()
    assert [line["pairing"] for line in stream.lines()] == [f"n{i}" for i in range(20)]


def test_without_a_running_loop_each_line_is_written_at_once(logger):
    _, stream = attach(logger, interval=60)
    logger.info("paired", extra=PAIRED)
    assert stream.lines()[0]["event"] == "paired"
    logger.debug("waiting", extra={"event": "waiting"})
    assert len(stream.lines()) == 2


def test_lines_left_by_a_closed_loop_go_out_with_the_next_loop(logger):
    handler, stream = attach(logger, interval=60)

    async def one(name: str) -> None:
        logger.info("paired", extra={**PAIRED, "pairing": name})

    asyncio.run(one("first"))  # its timer dies with its loop
    assert stream.getvalue() == ""

    async def second() -> list[dict]:
        handler.interval = 0.01
        await one("second")
        return await written(stream, 2)

    assert [line["pairing"] for line in asyncio.run(second())] == ["first", "second"]


def test_close_writes_what_is_buffered(logger):
    handler, stream = attach(logger, interval=60)

    async def log_some() -> None:
        for i in range(5):
            logger.info("paired", extra={**PAIRED, "pairing": f"n{i}"})

    asyncio.run(log_some())
    assert stream.getvalue() == ""
    handler.close()
    assert len(stream.lines()) == 5


async def test_threads_and_the_loop_never_split_a_line(logger):
    _, stream = attach(logger, interval=0.01, capacity=7)
    per_thread, threads = 300, 4

    def spam(t: int) -> None:
        for i in range(per_thread):
            logger.info("paired", extra={**PAIRED, "pairing": f"t{t}_{i}"})

    workers = [threading.Thread(target=spam, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    try:
        for i in range(per_thread):  # the loop thread logs too, buffered
            logger.info("paired", extra={**PAIRED, "pairing": f"loop_{i}"})
            if i % 50 == 0:
                await asyncio.sleep(0)
    finally:
        for worker in workers:
            worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    lines = await written(stream, per_thread * (threads + 1))  # each one parses whole
    names = [line["pairing"] for line in lines]
    assert len(set(names)) == len(names) == per_thread * (threads + 1)


def test_a_broken_stream_does_not_raise(logger):
    stream = CountingStream()
    handler = BufferedLineHandler(stream)
    handler.setFormatter(JsonLineFormatter(**FORMAT))
    logger.addHandler(handler)
    stream.close()
    logger.warning("refused", extra={"event": "refused"})  # must not raise
    assert handler.lines == []


def test_configure_logging_replaces_and_closes_the_old_handler():
    log = logging.getLogger("rendezvous")
    saved = log.handlers[:], log.level, log.propagate
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved_switches = {name: getattr(logging, name) for name in switches}
    first, second = CountingStream(), CountingStream()
    try:
        configure_logging("INFO", stream=first)
        log.info("one", extra={"event": "one"})
        configure_logging("WARNING", stream=second)
        log.info("dropped", extra={"event": "dropped"})
        log.warning("two", extra={"event": "two"})
        assert [line["event"] for line in first.lines()] == ["one"]
        assert [line["event"] for line in second.lines()] == ["two"]
        assert len(log.handlers) == 1
    finally:
        for handler in log.handlers:
            handler.close()
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
        for name, value in saved_switches.items():
            setattr(logging, name, value)


# -- the process: nothing lost at exit ----------------------------------------------------

CRASH = textwrap.dedent(
    """
    import asyncio, logging
    from rendezvous.logs import configure_logging
    configure_logging("INFO")
    log = logging.getLogger("rendezvous")

    async def main():
        for i in range(200):
            log.info("paired", extra={"event": "paired", "pairing": f"c{i}"})
        raise RuntimeError("crash with lines buffered")

    asyncio.run(main())
    """
)


def test_a_crashing_process_still_writes_every_buffered_line():
    out = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "crash with lines buffered" in out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [line["pairing"] for line in lines] == [f"c{i}" for i in range(200)]


def test_log_time_is_iso8601_utc():
    stream = io.StringIO()
    handler = configure_logging("INFO", stream=stream)
    try:
        before = time.time()
        logging.getLogger("rendezvous.test").warning("clock")
        handler.flush()
    finally:
        handler.close()
    stamp = json.loads(stream.getvalue().splitlines()[-1])["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    )
    assert abs(parsed.timestamp() - before) < 5


# -- log_event: the paired line without a LogRecord ----------------------------------------

EVENT_FIELDS = [
    PAIRED,
    {**PAIRED, "pairing": 'q"uote\\back\nnew\x01ctl\u2028 100% %s %(x)s \ud83d\ude00'},
    {**PAIRED, "protocol": "v1", "wait_seconds": 0.0},
    {**PAIRED, "wait_seconds": 1e-07},
    {**PAIRED, "wait_seconds": 123456.654321},
    {"event": "mixed", "n": 3, "big": 2**70, "neg": -1.5, "yes": True, "no": False, "none": None},
    {},
]


def fast_and_slow(formatter, fields, created: float, msg: str = "paired"):
    rec = record(msg, **fields)
    rec.created, rec.msecs = created, int((created - int(created)) * 1000) + 0.0
    line = formatter.event_line("INFO", msg, fields, rec.created, rec.msecs)
    return line, formatter.format(rec)


def test_event_line_is_the_formatters_line_byte_for_byte():
    from rendezvous.logs import UtcJsonLineFormatter

    formatter = UtcJsonLineFormatter(**FORMAT)
    stamps = [time.time(), 1763776000.0, 1763776000.9999, 1763776059.0005, 1893456000.5]
    for created in stamps:
        for fields in EVENT_FIELDS:
            for msg in ("paired", "50% done \u00e9"):
                fast, slow = fast_and_slow(formatter, fields, created, msg)
                assert fast == slow, (fields, created)


def test_event_line_leaves_other_setups_and_values_to_the_formatter():
    from rendezvous.logs import UtcJsonLineFormatter

    plain = UtcJsonLineFormatter(**FORMAT)
    created = time.time()
    for fields in ({"x": [1]}, {"x": float("nan")}, {"_private": 1}, {"time": "clash"}):
        assert fast_and_slow(plain, fields, created)[0] is None
    others = [
        UtcJsonLineFormatter(**FORMAT, static_fields={"service": "rendezvous"}),
        UtcJsonLineFormatter(**FORMAT, prefix="LOG "),
        UtcJsonLineFormatter(**FORMAT, json_serializer=json.dumps),
        UtcJsonLineFormatter("{asctime}{name}{message}", style="{"),
        UtcJsonLineFormatter(**{**FORMAT, "rename_fields": {"event": "kind"}}),
    ]
    for formatter in others:
        assert formatter.event_line("INFO", "paired", PAIRED, created, 0.0) is None


def configured(logger: logging.Logger) -> tuple[BufferedLineHandler, CountingStream]:
    from rendezvous.logs import UtcJsonLineFormatter

    stream = CountingStream()
    handler = BufferedLineHandler(stream)
    handler.setFormatter(UtcJsonLineFormatter(**FORMAT))
    logger.handlers[:] = [handler]  # only ours, as configure_logging leaves it (not pytest's)
    return handler, stream


def test_log_event_writes_what_logger_info_writes_without_a_record(logger, monkeypatch):
    from rendezvous.logs import log_event

    handler, stream = configured(logger)
    monkeypatch.setattr(time, "time", lambda: 1763776000.2345)
    logger.info("paired", extra=PAIRED)
    handler.flush()
    slow = stream.getvalue()

    def no_records(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("log_event made a LogRecord on the configure_logging set-up")

    monkeypatch.setattr(logger, "makeRecord", no_records)
    log_event(logger, logging.INFO, "paired", PAIRED)
    handler.flush()
    assert stream.getvalue() == slow + slow  # the same bytes, terminator included
    assert slow.count("\n") == 1


def test_log_event_honours_levels_filters_and_other_handlers(logger):
    from rendezvous.logs import log_event

    handler, stream = configured(logger)
    logger.setLevel(logging.WARNING)
    log_event(logger, logging.INFO, "paired", {"event": "below_logger_level"})
    logger.setLevel(logging.DEBUG)
    handler.setLevel(logging.WARNING)
    log_event(logger, logging.INFO, "paired", {"event": "below_handler_level"})
    handler.setLevel(logging.NOTSET)
    drop = logging.Filter("elsewhere")
    logger.addFilter(drop)
    log_event(logger, logging.INFO, "paired", {"event": "filtered_out"})
    logger.removeFilter(drop)
    log_event(logger, logging.INFO, "paired", {"event": "kept"})
    handler.flush()
    assert [line["event"] for line in stream.lines()] == ["kept"]

    second = CountingStream()
    extra = logging.StreamHandler(second)
    extra.setFormatter(JsonLineFormatter(**FORMAT))
    logger.addHandler(extra)  # two handlers: the record path, each gets the line
    log_event(logger, logging.INFO, "paired", {"event": "both"})
    handler.flush()
    assert [line["event"] for line in stream.lines()] == ["kept", "both"]
    assert [line["event"] for line in second.lines()] == ["both"]


async def test_log_event_lines_are_batched_and_written_on_close(logger):
    from rendezvous.logs import log_event

    handler, stream = configured(logger)
    for i in range(5):
        log_event(logger, logging.INFO, "paired", {**PAIRED, "pairing": f"n{i}"})
    assert stream.writes == 0  # buffered like any INFO line
    handler.close()
    assert [line["pairing"] for line in stream.lines()] == [f"n{i}" for i in range(5)]
    assert stream.writes == 1
    logger.removeHandler(handler)


LOG_EVENT_EXIT = textwrap.dedent(
    """
    import asyncio, logging
    from rendezvous.logs import configure_logging, log_event
    configure_logging("INFO")
    log = logging.getLogger("rendezvous")

    async def main():
        for i in range(200):
            log_event(log, logging.INFO, "paired", {"event": "paired", "pairing": f"c{i}"})

    asyncio.run(main())
    """
)


def test_log_event_lines_buffered_at_exit_are_written():
    out = subprocess.run(
        [sys.executable, "-c", LOG_EVENT_EXIT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [line["pairing"] for line in lines] == [f"c{i}" for i in range(200)]


async def test_a_pairing_logs_one_paired_line_in_the_formatters_format(make_server, unique):
    from tests.server.wire import v1

    log = logging.getLogger("rendezvous")
    saved = log.handlers[:], log.level, log.propagate
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved_switches = {name: getattr(logging, name) for name in switches}
    stream = CountingStream()
    handler = configure_logging("INFO", stream=stream)
    try:
        server = await make_server(http_port=None)
        name = unique("log\u00e9")
        a = await v1(server.port, name)
        b = await v1(server.port, name)
        assert len(await b.read_rest()) == 8 and len(await a.read_rest()) == 8  # the peers
        await a.close()
        await b.close()
        handler.flush()
        raw = [line for line in stream.getvalue().splitlines() if '"paired"' in line]
        assert len(raw) == 1, stream.getvalue()
        line = json.loads(raw[0])
        assert list(line) == [
            "time", "level", "msg", "event", "pairing", "protocol", "waiter", "newcomer",
            "wait_seconds",
        ]  # fmt: skip
        assert json.dumps(line) == raw[0]  # plain json.dumps spacing and escapes
        assert line["pairing"] == name and line["protocol"] == "v1"
        assert line["waiter"] == "{}:{}".format(*a.local)
        assert line["newcomer"] == "{}:{}".format(*b.local)
        assert line["level"] == "INFO" and line["msg"] == "paired"
        assert 0 <= line["wait_seconds"] < 30
    finally:
        handler.close()
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
        for switch, value in saved_switches.items():
            setattr(logging, switch, value)


async def test_a_mixed_pairing_says_which_side_spoke_which(make_server, unique):
    from tests.server.wire import v1, v2

    log = logging.getLogger("rendezvous")
    saved = log.handlers[:], log.level, log.propagate
    stream = CountingStream()
    handler = configure_logging("INFO", stream=stream)
    try:
        server = await make_server(http_port=None)
        name = unique("mixed")
        a = await v2(server.port, name)
        assert (await a.read_v2()).status.name == "WAITING"
        b = await v1(server.port, name)
        assert len(await b.read_rest()) == 8 and (await a.read_v2()).status.name == "PAIRED"
        await a.close()
        await b.close()
        handler.flush()
        raw = [line for line in stream.getvalue().splitlines() if '"paired"' in line]
        assert len(raw) == 1, stream.getvalue()
        line = json.loads(raw[0])
        assert json.dumps(line) == raw[0]  # the fast path, byte for byte the formatter's
        assert line["protocol"] == "mixed"
        assert line["waiter_protocol"] == "v2" and line["newcomer_protocol"] == "v1"
    finally:
        handler.close()
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


async def test_refusal_lines_never_hold_a_reconnect_token(make_server, unique):
    """A live token lets its holder take over the wait: a refusal names it by a digest."""
    from rendezvous.room import token_digest
    from tests.server.wire import v2

    log = logging.getLogger("rendezvous")
    saved = log.handlers[:], log.level, log.propagate
    stream = CountingStream()
    handler = configure_logging("INFO", stream=stream)
    try:
        server = await make_server(http_port=None)
        victim = await v2(server.port, unique("victim"))
        waiting = await victim.read_v2()
        live = waiting.token
        assert waiting.status.name == "WAITING" and live
        other = await v2(server.port, unique("other"), live)  # a live token, another name
        assert (await other.read_v2()).status.name == "ERROR"
        unknown = "0b8e3a4c-2f1d-4e5a-9c7b-6d5e4f3a2b1c"
        stranger = await v2(server.port, unique("stranger"), unknown)
        assert (await stranger.read_v2()).status.name == "ERROR"
        for client in (victim, other, stranger):
            await client.close()
        handler.flush()
        text = stream.getvalue()
        refused = [json.loads(line) for line in text.splitlines() if '"refused"' in line]
        assert [line["reason"] for line in refused] == ["bad_token", "bad_token"], text
        assert live not in text and live.replace("-", "") not in text
        assert unknown not in text
        assert token_digest(live) in refused[0]["detail"]
        assert token_digest(unknown) in refused[1]["detail"]
        assert re.fullmatch(r"sha256:[0-9a-f]{8}", token_digest(live))
    finally:
        handler.close()
        log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]

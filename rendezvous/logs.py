"""JSON logs: one line per event, with the event's fields as top-level keys.

The server logs one line per pairing at INFO, so a line must be cheap. The formatter is
python-json-logger's ``JsonFormatter`` with three documented knobs used: ``add_fields``
(its override point) without the generic paths we never use, ``formatTime`` cached per
second, and ``json_serializer`` bound to one encoder instance. The handler collects whole
lines and writes them in one ``write()`` per event-loop tick of ``FLUSH_INTERVAL``
seconds instead of one per line; WARNING and above, a full buffer, a log call from outside
the event loop, ``flush_logs()`` and interpreter exit (``logging.shutdown``) write at once,
so no line is lost on a clean exit and lines never interleave. In the server process
(:func:`configure_logging`) the batches go to a writer thread with a bounded queue
(:mod:`rendezvous.logwriter`): a sink that blocks never blocks the event loop; lines it
cannot take are dropped and counted (:func:`dropped_lines`).

:func:`log_event` is the hot path (the server's ``paired`` line): where the logger is set
up as :func:`configure_logging` does it, it builds the very line the formatter would,
without a ``LogRecord``, and hands it to the same handler; anywhere else it is
``logger.log(level, msg, extra=fields)``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, TextIO

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from rendezvous.logwriter import MAX_PENDING, LineWriter

FLUSH_INTERVAL = 0.1
"""Seconds a buffered INFO line may wait before it is written."""

FLUSH_CAPACITY = 512
"""Buffered lines that force a write (bounds memory under a burst)."""

LIBRARY_LOGGERS = ("asyncio", "aiohttp")
"""Loggers of the libraries the server runs on, sent to the same handler."""

FLUSH_WAIT = 2.0
"""Seconds an explicit flush (shutdown, no loop) waits for the writer thread at most."""


class JsonLineFormatter(JsonFormatter):
    default_msec_format: str = logging.Formatter.default_msec_format or "%s,%03d"
    """``JsonFormatter`` with the same output, at less cost per record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        encoder = JsonEncoder()
        own = None if "json_serializer" in kwargs else (lambda data, **_: encoder.encode(data))
        if own is not None:
            kwargs["json_serializer"] = own
        super().__init__(*args, **kwargs)
        # event_line() stands in for our own serializer only (plain json, ensure_ascii).
        self._own_serializer = own
        rename = self.rename_fields
        self._required_keys = [(field, rename.get(field, field)) for field in self._required_fields]
        self._lean = not (
            self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing
        )
        self._time_second = -1
        self._time_text = ""
        # event_line() covers the configure_logging() set-up: time, level and message
        # (renamed or not), extras not renamed, plain JSON from our own serializer.
        self._required_out = {key for _, key in self._required_keys}
        self._time_slots = self._required_fields.count("asctime")
        self._templates: dict[tuple[str, ...], str] = {}
        self._event_lines = (
            type(self) is UtcJsonLineFormatter
            and self._lean
            and own is not None
            and self.json_indent is None
            and set(self._required_fields) <= {"asctime", "levelname", "message"}
            and set(rename) <= set(self._required_fields)
            and len(self._required_out) == len(self._required_fields)
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging.Formatter.formatTime`` with the strftime done once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float) -> str:
        """The ``asctime`` text of a record created at ``created`` (``msecs`` past it)."""
        second = int(created)
        if second != self._time_second:
            self._time_text = time.strftime(self.default_time_format, self.converter(second))
            self._time_second = second
        return self.default_msec_format % (self._time_text, msecs)


class UtcJsonLineFormatter(JsonLineFormatter):
    """ISO-8601 UTC timestamps (``2026-11-22T01:06:42.780Z``): log collectors (CloudWatch,
    Loki) and people in other time zones read them without guessing the server's zone."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The base class's fields in its order: format fields, the dict message, extras."""
        if not self._lean:
            super().add_fields(log_data, record, message_dict)
            return
        attrs = record.__dict__
        rename = self.rename_fields
        for field, key in self._required_keys:
            log_data[key] = attrs.get(field)
        for key, value in message_dict.items():
            log_data[rename.get(key, key)] = value
        skip = self._skip_fields
        for key, value in attrs.items():
            if key not in skip and not (type(key) is str and key.startswith("_")):
                log_data[rename.get(key, key)] = value

    def event_line(
        self, levelname: str, msg: str, fields: dict[str, Any], created: float, msecs: float
    ) -> str | None:
        """What :meth:`format` returns for a record of ``msg`` (a str without %-args) with
        ``fields`` as its extras, or None where this formatter's set-up is not the plain one
        (then the caller must log a real record)."""
        if (
            not self._event_lines
            or self.prefix
            or self.datefmt is not None
            or self.json_serializer is not self._own_serializer
        ):
            return None
        key = (levelname, msg, *fields)
        template = self._templates.get(key)
        if template is None:
            template = self._event_template(levelname, msg, fields)
            if len(self._templates) >= 256:  # bounded: callers use a few fixed shapes
                self._templates.clear()
            self._templates[key] = template
        if not template:
            return None
        try:
            values = [
                encode_basestring_ascii(value) if type(value) is str else _json_scalar(value)
                for value in fields.values()
            ]
        except TypeError:
            return None  # a value plain JSON does not cover: the formatter decides
        if self._time_slots:
            time_json = encode_basestring_ascii(self.time_text(created, msecs))
            return template % (*((time_json,) * self._time_slots), *values)
        return template % tuple(values)

    def _event_template(self, levelname: str, msg: str, fields: dict[str, Any]) -> str:
        """The line for these fields as a %-template (time and values as ``%s``), or ""
        when an extra's name is one the formatter would drop or that clashes."""
        parts = []
        for field, key in self._required_keys:
            if field == "asctime":
                value = "%s"
            elif field == "levelname":
                value = encode_basestring_ascii(levelname).replace("%", "%%")
            else:
                value = encode_basestring_ascii(msg).replace("%", "%%")
            parts.append(encode_basestring_ascii(key).replace("%", "%%") + ": " + value)
        for key in fields:
            if (
                type(key) is not str
                or key in self._skip_fields
                or key.startswith("_")
                or key in self._required_out
            ):
                return ""
            parts.append(encode_basestring_ascii(key).replace("%", "%%") + ": %s")
        return "{" + ", ".join(parts) + "}"


def _json_scalar(value: Any) -> str:
    """``json.dumps(value)`` for str, int, finite float, bool and None; TypeError else."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
    elif kind is int:
        return int.__repr__(value)
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    raise TypeError(f"{kind.__name__} is left to the formatter")


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # not subscriptable at run time before Python 3.11
    _StreamHandler = logging.StreamHandler


class BufferedLineHandler(_StreamHandler):
    """Whole lines, written together: one ``write()`` per flush, not one per line.

    Lines logged on a running event loop wait up to ``interval`` seconds (a
    ``loop.call_later`` timer, armed by the first line of a batch); records at
    ``flush_level`` or above, the ``capacity``-th line and records logged where no loop
    runs are written at once, together with everything before them.

    ``background``: batches are handed to a :class:`~rendezvous.logwriter.LineWriter`
    thread (at most ``max_pending`` characters queued, beyond that dropped and counted);
    :meth:`flush` then waits for the thread, ``FLUSH_WAIT`` seconds at most, while the
    flushes on the event loop (timer, level, capacity) never wait.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = FLUSH_INTERVAL,
        capacity: int = FLUSH_CAPACITY,
        flush_level: int = logging.WARNING,
        background: bool = False,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__(stream)
        self.writer = LineWriter(self.stream, max_pending) if background else None
        self.interval = interval
        self.capacity = capacity
        self.flush_level = flush_level
        self.lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self.add_line(line, record.levelno)

    def emit_line(self, line: str, levelno: int) -> None:
        """Buffer one already formatted line (without terminator) as :meth:`emit` would."""
        lock = self.lock
        assert lock is not None  # Handler.__init__ creates it
        with lock:  # what Handler.handle() holds around emit()
            self.add_line(line + self.terminator, levelno)

    def add_line(self, line: str, levelno: int) -> None:
        lines = self.lines
        lines.append(line)
        if levelno >= self.flush_level or len(lines) >= self.capacity:
            # On the event loop: hand over and go on; elsewhere: written when this returns.
            self._write_out(wait=self.writer is not None and asyncio._get_running_loop() is None)
            return
        timer_loop = self._timer_loop
        if self._timer is not None and timer_loop is not None and not timer_loop.is_closed():
            return  # a write is already due
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop in this thread to write it later
            return
        self._timer_loop = loop
        self._timer = loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._write_out(wait=False)

    def flush(self) -> None:
        """Write every buffered line in one ``write()``, then flush the stream."""
        self._write_out(wait=True)

    def _write_out(self, *, wait: bool) -> None:
        """Write the buffered lines (to the writer thread when there is one; ``wait``:
        until it wrote them, ``FLUSH_WAIT`` s at most)."""
        writer = self.writer
        self.acquire()
        try:
            if writer is not None:
                if self.lines:
                    writer.put("".join(self.lines), len(self.lines))
                    self.lines.clear()
            else:
                if self.lines:
                    text = "".join(self.lines)
                    self.lines.clear()
                    self.stream.write(text)
                if hasattr(self.stream, "flush"):
                    self.stream.flush()
        except Exception:  # a closed or broken stream must not take the server down
            self.lines.clear()
        finally:
            self.release()
        if wait and writer is not None:
            writer.wait(FLUSH_WAIT)

    @property
    def dropped(self) -> int:
        """Lines dropped because the sink did not keep up (0 without a writer thread)."""
        return 0 if self.writer is None else self.writer.dropped

    def close(self) -> None:
        self.flush()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self.writer is not None:
            self.writer.close(FLUSH_WAIT)
        super().close()


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, max_pending: int = MAX_PENDING
) -> BufferedLineHandler:
    """Send the ``rendezvous`` logger's records to ``stream`` (stderr) as JSON lines.

    Lines are written by a thread; ``max_pending`` characters may wait for the stream,
    beyond that lines are dropped and counted.
    Meant for the ``rendezvous serve`` process, which it owns: it also turns off
    logging's process-wide caller/thread/process lookups. Programs that embed the server
    (``BackgroundServer``) keep their own logging setup and do not call this.
    """
    handler = BufferedLineHandler(stream or sys.stderr, background=True, max_pending=max_pending)
    handler.setFormatter(
        UtcJsonLineFormatter(
            "{asctime}{levelname}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "message": "msg"},
        )
    )
    logger = logging.getLogger("rendezvous")
    for old in logger.handlers:
        old.close()
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # The logging docs' "Optimization" switches: we log none of these fields, and
    # finding the caller's frame alone costs several microseconds per pairing.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return handler


def route_library_logs(handler: logging.Handler) -> None:
    """What the event loop and aiohttp report (their WARNING and above) goes to
    ``handler`` as JSON lines too, a traceback inside its line: nothing multi-line
    reaches stderr. For the ``rendezvous serve`` process, which owns its logging."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.propagate = False


if sys.version_info >= (3, 13):

    def _record_time() -> tuple[float, float]:
        """``LogRecord.created`` and ``.msecs`` as this Python computes them."""
        ns = time.time_ns()
        return ns / 1e9, (ns % 1_000_000_000) // 1_000_000 + 0.0

else:

    def _record_time() -> tuple[float, float]:
        """``LogRecord.created`` and ``.msecs`` as this Python computes them."""
        ct = time.time()
        return ct, int((ct - int(ct)) * 1000) + 0.0


def log_event(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, msg, extra=fields)``, for less where it can be.

    When ``logger`` has exactly one handler, a :class:`BufferedLineHandler` with a plain
    :class:`UtcJsonLineFormatter` (the :func:`configure_logging` set-up: no filters, no
    propagation), the line is built here, byte for byte as the formatter would, and
    buffered by that handler; no ``LogRecord`` is made. Otherwise the record is logged.
    """
    if not logger.isEnabledFor(level):
        return
    handlers = logger.handlers
    if len(handlers) == 1 and not (logger.filters or logger.propagate or logger.disabled):
        handler = handlers[0]
        formatter = handler.formatter
        if (
            type(handler) is BufferedLineHandler
            and level >= handler.level
            and not handler.filters
            and isinstance(formatter, UtcJsonLineFormatter)
        ):
            created, msecs = _record_time()
            line = formatter.event_line(logging.getLevelName(level), msg, fields, created, msecs)
            if line is not None:
                handler.emit_line(line, level)
                return
    logger.log(level, msg, extra=fields, stacklevel=2)


def dropped_lines() -> int:
    """Lines the ``rendezvous`` logger's handlers dropped because their sink was slow."""
    return sum(getattr(h, "dropped", 0) for h in logging.getLogger("rendezvous").handlers)


def flush_logs() -> None:
    """Write out the ``rendezvous`` logger's buffered lines now (shutdown, hand-over)."""
    for handler in logging.getLogger("rendezvous").handlers:
        handler.flush()

"""JSON logs: one line per event, with the event's fields as top-level keys.

The server logs one line per pairing at INFO, so a line must be cheap. The formatter is
python-json-logger's ``JsonFormatter`` with three documented knobs used: ``add_fields``
(its override point) without the generic paths we never use, ``formatTime`` cached per
second, and ``json_serializer`` bound to one encoder instance. The handler collects whole
lines and writes them in one ``write()`` per event-loop tick of ``FLUSH_INTERVAL``
seconds instead of one per line; WARNING and above, a full buffer, a log call from outside
the event loop, ``flush_logs()`` and interpreter exit (``logging.shutdown``) write at once,
so no line is lost on a clean exit and lines never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

FLUSH_INTERVAL = 0.1
"""Seconds a buffered INFO line may wait before it is written."""

FLUSH_CAPACITY = 512
"""Buffered lines that force a write (bounds memory under a burst)."""


class JsonLineFormatter(JsonFormatter):
    """``JsonFormatter`` with the same output, at less cost per record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        encoder = JsonEncoder()
        kwargs.setdefault("json_serializer", lambda data, **_: encoder.encode(data))
        super().__init__(*args, **kwargs)
        rename = self.rename_fields
        self._required_keys = [(field, rename.get(field, field)) for field in self._required_fields]
        self._lean = not (
            self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing
        )
        self._time_second = -1
        self._time_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging.Formatter.formatTime`` with the strftime done once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._time_second:
            self._time_text = time.strftime(self.default_time_format, self.converter(second))
            self._time_second = second
        return self.default_msec_format % (self._time_text, record.msecs)


class UtcJsonLineFormatter(JsonLineFormatter):
    """ISO-8601 UTC timestamps (``2026-11-22T01:06:42.780Z``): log collectors (CloudWatch,
    Loki) and people in other time zones read them without guessing the server's zone."""

    converter = time.gmtime
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


class BufferedLineHandler(logging.StreamHandler):
    """Whole lines, written together: one ``write()`` per flush, not one per line.

    Lines logged on a running event loop wait up to ``interval`` seconds (a
    ``loop.call_later`` timer, armed by the first line of a batch); records at
    ``flush_level`` or above, the ``capacity``-th line and records logged where no loop
    runs are written at once, together with everything before them.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = FLUSH_INTERVAL,
        capacity: int = FLUSH_CAPACITY,
        flush_level: int = logging.WARNING,
    ) -> None:
        super().__init__(stream)
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
        lines = self.lines
        lines.append(line)
        if record.levelno >= self.flush_level or len(lines) >= self.capacity:
            self.flush()
            return
        if self._timer is not None and not self._timer_loop.is_closed():  # type: ignore[union-attr]
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
        self.flush()

    def flush(self) -> None:
        """Write every buffered line in one ``write()``, then flush the stream."""
        self.acquire()
        try:
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

    def close(self) -> None:
        self.flush()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        super().close()


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> BufferedLineHandler:
    """Send the ``rendezvous`` logger's records to ``stream`` (stderr) as JSON lines.

    Meant for the ``rendezvous serve`` process, which it owns: it also turns off
    logging's process-wide caller/thread/process lookups. Programs that embed the server
    (``BackgroundServer``) keep their own logging setup and do not call this.
    """
    handler = BufferedLineHandler(stream or sys.stderr)
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


def flush_logs() -> None:
    """Write out the ``rendezvous`` logger's buffered lines now (shutdown, hand-over)."""
    for handler in logging.getLogger("rendezvous").handlers:
        handler.flush()

"""JSON logs: one line per event, with the event's fields as top-level keys.

The server logs one line per pairing at INFO, so a line must be cheap. The formatter is
:mod:`rendezvous.jsonlines` (python-json-logger's, leaner). The handler collects whole
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
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from rendezvous.jsonlines import JsonLineFormatter, UtcJsonLineFormatter
from rendezvous.logwriter import MAX_PENDING, LineWriter

__all__ = ["JsonLineFormatter", "UtcJsonLineFormatter", "configure_logging", "log_event"]

FLUSH_INTERVAL = 0.1
"""Seconds a buffered INFO line may wait before it is written."""

FLUSH_CAPACITY = 512
"""Buffered lines that force a write (bounds memory under a burst)."""

LIBRARY_LOGGERS = ("asyncio", "aiohttp")
"""Loggers of the libraries the server runs on, sent to the same handler."""

FLUSH_WAIT = 2.0
"""Seconds an explicit flush (shutdown, no loop) waits for the writer thread at most."""


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

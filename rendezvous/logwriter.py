"""Writing log lines off the event loop: a bounded queue of batches and one writer thread.

With stderr a pipe that nobody reads, a ``write()`` on the event loop blocks the whole
server. The loop hands whole batches (one string per flush, never one per line) to
:class:`LineWriter`; a daemon thread writes them. When more than ``max_pending``
characters wait, a new batch is dropped and its lines counted in ``dropped`` (the
``rendezvous_log_dropped_total`` metric); a ``log_dropped`` line says so once the sink
takes lines again. A real file descriptor is written with ``os.write`` (no Python
buffer lock held while blocked, so the interpreter can still exit); other streams with
``stream.write``.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from typing import TextIO

MAX_PENDING = 1 << 20
"""Characters of log lines that may wait for the sink before new batches are dropped."""


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def dropped_line(count: int, sink: str = "stderr") -> str:
    """The JSON line that reports ``count`` dropped lines (same keys as every line)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return (
        json.dumps(
            {
                "time": stamp,
                "level": "WARNING",
                "msg": "log lines dropped",
                "event": "log_dropped",
                "dropped": count,
                "detail": f"the log sink ({sink}) did not keep up; read it faster",
            }
        )
        + "\n"
    )


class LineWriter:
    """One thread that writes queued batches to ``stream``, in order, whole.

    ``sink`` names the stream in the thread's name and the ``log_dropped`` line;
    ``report=False`` leaves that line out (a stream of other lines, e.g. EMF on stdout,
    where the owner reports drops its own way).
    """

    def __init__(
        self,
        stream: TextIO,
        max_pending: int = MAX_PENDING,
        *,
        sink: str = "stderr",
        report: bool = True,
    ) -> None:
        self.stream = stream
        self.max_pending = max_pending
        self.sink = sink
        self.report = report
        self.dropped = 0  # lines dropped since start (the metric)
        self._unreported = 0  # lines dropped and not yet reported in a log_dropped line
        self._queue: collections.deque[str] = collections.deque()
        self._pending = 0
        self._queued = 0  # batches queued since start
        self._written = 0  # batches written (or given up on) since start
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def batches(self) -> int:
        """Batches handed over so far: one thread hand-off each, never one per line."""
        return self._queued

    def put(self, text: str, lines: int) -> bool:
        """Queue one batch of ``lines`` lines; False (and counted) when it was dropped."""
        with self._cond:
            if self._closing:
                return False
            if self._pending + len(text) > self.max_pending:
                self.dropped += lines
                self._unreported += lines
                return False
            self._queue.append(text)
            self._pending += len(text)
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"rendezvous-{self.sink}-writer", daemon=True
                )
                self._thread.start()
            else:
                self._cond.notify()
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until every batch queued so far is written, ``timeout`` at most."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> None:
        """Write what is queued (``timeout`` at most), then stop the thread."""
        self.wait(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=0.5)

    def _run(self) -> None:
        fd = _fileno(self.stream)
        if fd is not None:
            try:
                self.stream.flush()  # what was written to it directly goes first
            except (OSError, ValueError):
                fd = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batches = list(self._queue)
                self._queue.clear()
                unreported, self._unreported = self._unreported, 0
            text = "".join(batches)
            if unreported and self.report:
                text += dropped_line(unreported, self.sink)
            self._write(fd, text)
            with self._cond:
                self._pending -= sum(len(batch) for batch in batches)
                self._written += len(batches)
                self._cond.notify_all()

    def _write(self, fd: int | None, text: str) -> None:
        try:
            if fd is None:
                self.stream.write(text)
                self.stream.flush()
                return
            data = text.encode("utf-8", "backslashreplace")
            while data:
                data = data[os.write(fd, data) :]
        except (OSError, ValueError):  # a closed or broken sink: these lines are lost
            return

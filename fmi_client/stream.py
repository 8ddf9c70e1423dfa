"""A byte stream to one peer over a connected socket (plain or TLS): buffered reads,
exact reads straight into a destination, and the non-blocking half of a full-duplex
exchange (poll() for both directions, pushing our pending bytes while we wait to read).

A TLS socket (``ssl.SSLSocket``, an encrypted link) differs from a plain one in three
ways that matter here: ``recv_into`` takes no flags (no MSG_WAITALL), poll() on the fd
cannot see bytes already decrypted inside the TLS object (``pending()``), and in
non-blocking mode a would-block is ``SSLWantReadError``/``SSLWantWriteError``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from collections.abc import Callable

from fmi_client.errors import PeerLost

_WAITALL = getattr(socket, "MSG_WAITALL", 0)
READ_CHUNK = 256 * 1024
#: would-block in non-blocking mode: plain sockets raise the first, TLS sockets the others
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_WOULD_BLOCK = WOULD_BLOCK
#: Frames up to this size are sent with one send() call (header and payload joined).
SMALL_FRAME = 64 * 1024
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR | select.POLLHUP | getattr(select, "POLLNVAL", 0)


class Stream:
    """The bytes between us (``me``) and rank ``peer`` over ``sock``."""

    def __init__(self, sock: socket.socket, me: int, peer: int) -> None:
        self.sock = sock
        self.me = me
        self.peer = peer
        tls = isinstance(sock, ssl.SSLSocket)
        self._waitall = 0 if tls else _WAITALL  # SSLSocket.recv_into takes no flags
        # bytes decrypted inside the TLS object (poll() on the fd cannot see them)
        self._decrypted: Callable[[], int] = sock.pending if tls else _nothing  # type: ignore[attr-defined]
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0  # unread bytes are _buf[_start:_end]
        self._end = 0
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into
        # while an exchange runs: the rest of our frame still to send (None otherwise)
        self._pending: list[memoryview] | None = None
        self._poller: select.poll | None = None
        self._op_timeout: float | None = None
        self.closed = False
        self.eof = False  # the end of the stream was met (by Channel.pump)

    def _write(self, header: bytes, payload: memoryview | bytes) -> None:
        try:
            if len(payload) <= SMALL_FRAME:
                self.sock.sendall(header + bytes(payload))
            else:
                self.sock.sendall(header)
                self.sock.sendall(payload)
        except OSError as exc:
            raise self._lost(f"sending to it failed ({exc})") from exc

    # -- receiving -----------------------------------------------------------------------

    def _lost(self, what: str) -> PeerLost:
        if "timed out" in what:
            limit = self.sock.gettimeout() if self._pending is None else self._op_timeout
            what += f" after op_timeout={limit or 0:g} s without data"
        return PeerLost(
            f"rank {self.me}: the connection to rank {self.peer} broke: {what}. Rank "
            f"{self.peer} probably died or closed its communicator; see its logs.",
            rank=self.peer,
        )

    def _fill(self, need: int) -> None:
        """Make at least ``need`` (<= READ_CHUNK) unread bytes available in the buffer."""
        start, end = self._start, self._end
        if end - start >= need:
            return
        if start == end:
            start = end = 0
        elif start + need > READ_CHUNK:  # move the unread tail to the front
            self._buf[: end - start] = self._buf[start:end]
            start, end = 0, end - start
        self._start = start
        recv_into, view = self.sock.recv_into, self._view
        while end - start < need:
            try:
                got = recv_into(view[end:])
            except _WOULD_BLOCK:  # only during an exchange: push our frame meanwhile
                self._wait_readable()
                continue
            except OSError as exc:
                self._end = end
                raise self._lost(f"receiving failed ({exc})") from exc
            if not got:
                self._end = end
                raise self._lost("it closed the connection (EOF)")
            end += got
        self._end = end

    def _take(self, size: int) -> memoryview:
        """The next ``size`` (<= READ_CHUNK) bytes, valid until the next read."""
        self._fill(size)
        start = self._start
        self._start += size
        return self._view[start : start + size]

    def _read_into(self, dest: memoryview) -> None:
        """Fill ``dest`` exactly: first from the buffer, then straight from the socket."""
        have = min(self._end - self._start, len(dest))
        if have:
            dest[:have] = self._view[self._start : self._start + have]
            self._start += have
        pos = have
        total = len(dest)
        recv_into, waitall = self.sock.recv_into, self._waitall
        while pos < total:
            try:
                # MSG_WAITALL: the kernel fills the rest in one call (one wake-up, not one
                # per segment); it may still return early (signal), hence the loop
                got = recv_into(dest[pos:], 0, waitall)
            except _WOULD_BLOCK:  # only during an exchange: push our frame meanwhile
                self._wait_readable()
                continue
            except OSError as exc:
                raise self._lost(f"receiving failed ({exc})") from exc
            if not got:
                raise self._lost(f"it closed the connection (EOF) after {pos} of {total} bytes")
            pos += got

    def fileno(self) -> int:
        return self.sock.fileno()

    def readable_now(self) -> bool:
        """Whether bytes are here that poll() on the fd would not show (buffered here or
        decrypted inside the TLS object)."""
        return self._start != self._end or self._decrypted() > 0

    def _push(self) -> None:
        """Send as much of the pending frame as the socket takes now (never blocks)."""
        pending = self._pending
        send = self.sock.send
        while pending:
            view = pending[0]
            try:
                sent = send(view)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                raise self._lost(f"sending to it failed ({exc})") from exc
            if sent == len(view):
                pending.pop(0)
            else:
                pending[0] = view[sent:]
                return

    def _poll(self, events: int) -> int:
        """Wait (up to the op timeout) until the socket is ready for ``events``."""
        poller = self._poller
        assert poller is not None, "polled outside an exchange"
        poller.modify(self.sock.fileno(), events)
        limit = self._op_timeout  # the socket's own timeout reads 0.0 while non-blocking
        ready = poller.poll(None if limit is None else max(1, int(limit * 1000)))
        if not ready:
            raise self._lost("the exchange timed out")
        got: int = ready[0][1]
        return got

    def _wait_readable(self) -> None:
        """Block until there is data to read, sending our pending frame meanwhile."""
        if self._pending is None:  # a non-blocking socket outside an exchange
            raise self._lost("receiving failed (the socket is non-blocking)")
        while True:
            if self._decrypted():  # decrypted already: poll() cannot see it
                return
            events = self._poll(_POLLIN | _POLLOUT if self._pending else _POLLIN)
            if events & _POLLOUT:
                self._push()
            if events & (_POLLIN | _POLLERR):
                return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


def _nothing() -> int:
    return 0


__all__ = ["READ_CHUNK", "SMALL_FRAME", "WOULD_BLOCK", "Stream"]

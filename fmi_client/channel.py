"""One connection to one peer rank: framed send and tagged receive over a blocking socket.

Small frames are read with one recv() into a reusable buffer; array payloads go straight
from the sender's array (memoryview) into a preallocated receiving array (recv_into).
Frames whose tag nobody asked for yet are decoded and queued per tag. An exchange (both
ranks send to each other at once) runs full duplex in this thread: the socket goes
non-blocking and whenever a receive would block we poll() and push more of our own frame,
so both directions of the link move at the same time without a helper thread.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections import defaultdict, deque
from typing import Any

from fmi_client import framing
from fmi_client.errors import PeerLost
from fmi_client.framing import FIXED_SIZE, KIND_ARRAY, KIND_BYTES, MAGIC, FrameHeader, np

_pack_fixed = framing.FIXED_STRUCT.pack
_unpack_fixed = framing.FIXED_STRUCT.unpack_from
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
READ_CHUNK = 256 * 1024
#: Frames up to this size are sent with one send() call (header and payload joined).
SMALL_FRAME = 64 * 1024
#: Below this, an exchange sends before it receives: the socket buffer absorbs the frame.
SMALL_EXCHANGE = 32 * 1024
ANY_USER = -2  # _read_frame's want: any user tag (>= 0); never a tag on the wire
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR | select.POLLHUP | getattr(select, "POLLNVAL", 0)


class Channel:
    """The frames between us (``me``) and rank ``peer`` over ``sock``."""

    def __init__(self, sock: socket.socket, me: int, peer: int) -> None:
        self.sock = sock
        self.me = me
        self.peer = peer
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0  # unread bytes are _buf[_start:_end]
        self._end = 0
        self._queued: defaultdict[int, deque[Any]] = defaultdict(deque)
        self._order: deque[int] = deque()  # the tags of queued frames, in arrival order
        self._sender: Any = None  # an isend's thread still writing (see p2p.send_later)
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into
        # while an exchange runs: the rest of our frame still to send (None otherwise)
        self._pending: list[memoryview] | None = None
        self._poller: select.poll | None = None
        self._op_timeout: float | None = None
        self.closed = False
        self.eof = False  # pump() met the end of the stream

    # -- sending -------------------------------------------------------------------------

    def send(self, obj: Any, tag: int) -> None:
        if self._sender is not None:
            self.finish_sending()
        if type(obj) is bytes and len(obj) <= SMALL_FRAME:  # the latency-critical case
            try:
                self._sendall(_pack_fixed(MAGIC, KIND_BYTES, tag, len(obj), 0, 0) + obj)
            except OSError as exc:
                raise self._lost(f"sending to it failed ({exc})") from exc
            return
        self._send_frame(*framing.encode(obj, tag))

    def _send_frame(self, header: bytes, payload: memoryview | bytes) -> None:
        if self._sender is not None:
            self.finish_sending()
        self._write(header, payload)

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
            except BlockingIOError:  # only during an exchange: push our frame meanwhile
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
        recv_into = self.sock.recv_into
        while pos < total:
            try:
                # MSG_WAITALL: the kernel fills the rest in one call (one wake-up, not one
                # per segment); it may still return early (signal), hence the loop
                got = recv_into(dest[pos:], 0, _WAITALL)
            except BlockingIOError:  # only during an exchange: push our frame meanwhile
                self._wait_readable()
                continue
            except OSError as exc:
                raise self._lost(f"receiving failed ({exc})") from exc
            if not got:
                raise self._lost(f"it closed the connection (EOF) after {pos} of {total} bytes")
            pos += got

    def _read_frame(self, out: Any = None, want: int = 0) -> tuple[int, Any]:
        """The next frame; an array lands in ``out`` only if its tag is ``want`` (or any >= 0)."""
        start, end = self._start, self._end
        if end - start >= FIXED_SIZE:  # fast path: a small non-array frame already buffered
            magic, kind, tag, length, _, _ = _unpack_fixed(self._buf, start)
            stop = start + FIXED_SIZE + length
            if magic == MAGIC and kind == KIND_BYTES and stop <= end:
                self._start = stop
                return tag, self._view[start + FIXED_SIZE : stop].tobytes()
        header = framing.decode_fixed(self._take(FIXED_SIZE))
        if header.kind == KIND_ARRAY:
            dtype, shape = framing.decode_array_meta(header, bytes(self._take(header.meta_size)))
            if out is not None and header.tag != want and (want != ANY_USER or header.tag < 0):
                out = None
            return header.tag, self._read_array(header, dtype, shape, out)
        if header.length <= READ_CHUNK:
            return header.tag, framing.decode_payload(header, self._take(header.length))
        payload = bytearray(header.length)
        self._read_into(memoryview(payload))
        return header.tag, framing.decode_payload(header, payload)

    def _read_array(self, header: FrameHeader, dtype: str, shape: tuple[int, ...], out: Any) -> Any:
        if np is None:
            raise RuntimeError("a peer sent a numpy array but numpy is not installed here")
        if (
            out is not None
            and out.dtype.str == dtype
            and out.nbytes == header.length
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            target = out if out.shape == tuple(shape) else out.reshape(shape)
        else:
            target = np.empty(shape, dtype=np.dtype(dtype))
        if header.length:
            self._read_into(memoryview(target.reshape(-1)).cast("B"))
        return target

    def recv(self, tag: int, out: Any = None) -> Any:
        """The next object with ``tag``; arrays land in ``out`` when it fits (same layout)."""
        if not self._queued:  # fast path: a small bytes frame for this tag, in one recv()
            start, end = self._start, self._end
            if start == end and self._pending is None:
                try:
                    end = self._recv_into(self._view)
                except OSError as exc:
                    raise self._lost(f"receiving failed ({exc})") from exc
                if not end:
                    raise self._lost("it closed the connection (EOF)")
                start = self._start = 0
                self._end = end
            if end - start >= FIXED_SIZE:
                magic, kind, got_tag, length, _, _ = _unpack_fixed(self._buf, start)
                stop = start + FIXED_SIZE + length
                if magic == MAGIC and kind == KIND_BYTES and got_tag == tag and stop <= end:
                    self._start = stop
                    return self._view[start + FIXED_SIZE : stop].tobytes()
        elif tag in self._queued:
            return self._dequeue(tag)
        while True:
            if self._start == self._end:
                self._fill(FIXED_SIZE)
            got_tag, obj = self._read_frame(out, tag)
            if got_tag == tag:
                return obj
            self._enqueue(got_tag, obj)

    # -- any tag, polling, sending in the background (fmi_client.p2p) --------------------

    def _enqueue(self, tag: int, obj: Any) -> None:
        self._queued[tag].append(obj)
        self._order.append(tag)

    def _dequeue(self, tag: int) -> Any:
        queue = self._queued[tag]
        obj = queue.popleft()
        if not queue:
            del self._queued[tag]
        self._order.remove(tag)  # its first occurrence: the frame just taken
        return obj

    def take_queued(self, tag: int) -> tuple[int, Any] | None:
        """The oldest queued frame with ``tag`` (a negative tag: any user tag), or None."""
        if tag < 0:
            tag = next((t for t in self._order if t >= 0), -1)
            if tag < 0:
                return None
        elif tag not in self._queued:
            return None
        return tag, self._dequeue(tag)

    def recv_any(self, out: Any = None) -> Any:
        """The next object with any user tag (mpi4py's default ANY_TAG): recv's fast path."""
        if not self._queued:
            start, end = self._start, self._end
            if start == end and self._pending is None:
                try:
                    end = self._recv_into(self._view)
                except OSError as exc:
                    raise self._lost(f"receiving failed ({exc})") from exc
                if not end:
                    raise self._lost("it closed the connection (EOF)")
                start = self._start = 0
                self._end = end
            if end - start >= FIXED_SIZE:
                magic, kind, got_tag, length, _, _ = _unpack_fixed(self._buf, start)
                stop = start + FIXED_SIZE + length
                if magic == MAGIC and kind == KIND_BYTES and got_tag >= 0 and stop <= end:
                    self._start = stop
                    return self._view[start + FIXED_SIZE : stop].tobytes()
        return self.recv_tagged(-1, out)[1]

    def recv_tagged(self, tag: int, out: Any = None) -> tuple[int, Any]:
        """``(tag, obj)`` of the next frame with ``tag``; a negative tag takes any user tag."""
        if tag >= 0:
            return tag, self.recv(tag, out)
        found = self.take_queued(tag)
        if found is not None:
            return found
        while True:
            got_tag, obj = self._read_frame(out, ANY_USER)
            if got_tag >= 0:
                return got_tag, obj
            self._enqueue(got_tag, obj)

    def pump(self) -> None:
        """Queue every frame whose first byte is here already (never waits for a frame
        that has not started; finishes one that has, within the op timeout). At the end
        of the stream it sets ``eof`` and leaves the error to whoever needs more data."""
        poller = select.poll()
        poller.register(self.sock.fileno(), _POLLIN)
        while not self.eof:
            if self._start == self._end:
                if not poller.poll(0):
                    return
                try:
                    got = self.sock.recv_into(self._view)
                except OSError as exc:
                    raise self._lost(f"receiving failed ({exc})") from exc
                if not got:
                    self.eof = True
                    return
                self._start, self._end = 0, got
            got_tag, obj = self._read_frame()
            self._enqueue(got_tag, obj)

    def fileno(self) -> int:
        return self.sock.fileno()

    def finish_sending(self) -> None:
        """Wait for an isend's thread (``p2p.send_later``; its error goes to its request)."""
        thread, self._sender = self._sender, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def exchange(self, obj: Any, tag: int, out: Any = None) -> Any:
        """Send ``obj`` and receive the peer's object at the same time (both sides call it).

        A frame small enough for the socket buffers is sent first. A bigger one is sent
        while we receive: the socket goes non-blocking, and every time the receive would
        block we poll() for both directions and send as much of our frame as the kernel
        takes (no thread; sending before receiving would deadlock with full buffers).
        """
        if self._sender is not None:
            self.finish_sending()
        header, payload = framing.encode(obj, tag)
        if len(payload) <= SMALL_EXCHANGE:
            self._send_frame(header, payload)
            return self.recv(tag, out)
        sock = self.sock
        timeout = sock.gettimeout()
        pending = [memoryview(header), memoryview(payload).cast("B")]
        self._pending = pending
        self._op_timeout = timeout
        self._poller = select.poll()
        self._poller.register(sock.fileno(), _POLLIN | _POLLOUT)
        try:
            sock.setblocking(False)
            self._push()
            result = self.recv(tag, out)
            while pending:  # the peer's frame is in; finish ours
                writable = self._poll(_POLLOUT) & _POLLOUT
                self._push()  # on an error or hang-up, send() raises PeerLost saying which
                if pending and not writable:
                    raise self._lost("it hung up before taking all of our data")
        except BaseException:
            if pending:  # half a frame went out: the stream is out of step for good
                self.close()
            raise
        finally:
            self._pending = None
            self._poller = None
            if not self.closed:
                sock.settimeout(timeout)
        return result

    def _push(self) -> None:
        """Send as much of the pending frame as the socket takes now (never blocks)."""
        pending = self._pending
        send = self.sock.send
        while pending:
            view = pending[0]
            try:
                sent = send(view)
            except BlockingIOError:
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

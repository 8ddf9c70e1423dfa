"""One connection to one peer rank: framed send and tagged receive over a blocking socket.

Small frames are read with one recv() into a reusable buffer; array payloads go straight
from the sender's array (memoryview) into a preallocated receiving array (recv_into).
Frames whose tag nobody asked for yet are decoded and queued per tag.
"""

from __future__ import annotations

import contextlib
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
        self.closed = False

    # -- sending -------------------------------------------------------------------------

    def send(self, obj: Any, tag: int) -> None:
        if type(obj) is bytes and len(obj) <= SMALL_FRAME:  # the latency-critical case
            try:
                self.sock.sendall(_pack_fixed(MAGIC, KIND_BYTES, tag, len(obj), 0, 0) + obj)
            except OSError as exc:
                raise self._lost(f"sending to it failed ({exc})") from exc
            return
        self._send_frame(*framing.encode(obj, tag))

    def _send_frame(self, header: bytes, payload: memoryview | bytes) -> None:
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
            what += f" after op_timeout={self.sock.gettimeout():g} s without data"
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
            except OSError as exc:
                raise self._lost(f"receiving failed ({exc})") from exc
            if not got:
                raise self._lost(f"it closed the connection (EOF) after {pos} of {total} bytes")
            pos += got

    def _read_frame(self, out: Any = None) -> tuple[int, Any]:
        start, end = self._start, self._end
        if end - start >= FIXED_SIZE:  # fast path: a small non-array frame already buffered
            magic, kind, tag, length, _, _ = _unpack_fixed(self._buf, start)
            stop = start + FIXED_SIZE + length
            if magic == MAGIC and kind == KIND_BYTES and stop <= end:
                self._start = stop
                return tag, bytes(self._buf[start + FIXED_SIZE : stop])
        header = framing.decode_fixed(self._take(FIXED_SIZE))
        if header.kind == KIND_ARRAY:
            dtype, shape = framing.decode_array_meta(header, bytes(self._take(header.meta_size)))
            return header.tag, self._read_array(header, dtype, shape, out)
        if header.length <= READ_CHUNK:
            return header.tag, framing.decode_payload(header, self._take(header.length))
        payload = bytearray(header.length)
        self._read_into(memoryview(payload))
        return header.tag, framing.decode_payload(header, payload)

    def _read_array(self, header: FrameHeader, dtype: str, shape: tuple, out: Any) -> Any:
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
        if self._queued:
            queue = self._queued.get(tag)
            if queue:
                obj = queue.popleft()
                if not queue:
                    del self._queued[tag]
                return obj
        while True:
            if self._start == self._end:
                self._fill(FIXED_SIZE)
            got_tag, obj = self._read_frame(out)
            if got_tag == tag:
                return obj
            self._queued[got_tag].append(obj)

    def exchange(self, obj: Any, tag: int, out: Any = None) -> Any:
        """Send ``obj`` and receive the peer's object at the same time (both sides call it).

        A frame small enough for the socket buffers is sent first; a bigger one (array or
        pickle) is sent from a helper thread while we receive, or both sides would block
        in send() with full buffers.
        """
        header, payload = framing.encode(obj, tag)
        if len(payload) <= SMALL_EXCHANGE:
            self._send_frame(header, payload)
            return self.recv(tag, out)
        failure: list[BaseException] = []

        def send() -> None:
            try:
                self._send_frame(header, payload)
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        sender = threading.Thread(target=send, name=f"fmi-send-{self.me}-{self.peer}")
        sender.start()
        try:
            result = self.recv(tag, out)
        except BaseException:
            self.close()  # unblocks the sender
            sender.join()
            raise
        sender.join()
        if failure:
            raise failure[0]
        return result

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

"""One connection to one peer rank: framed send and tagged receive over a blocking socket.

Small frames are read with one recv() into a reusable buffer; array payloads go straight
from the sender's array (memoryview) into a preallocated receiving array (recv_into).
Frames whose tag nobody asked for yet are decoded and queued per tag. An exchange (both
ranks send to each other at once) runs full duplex in this thread: the socket goes
non-blocking and whenever a receive would block we poll() and push more of our own frame,
so both directions of the link move at the same time without a helper thread.

Nothing a peer sends is trusted: every frame is bounded by ``max_message_bytes`` before
anything is allocated for it (and so are the bytes queued under tags nobody has asked
for yet), array dtypes are checked before ``np.empty``, and a pickled frame is refused
unread unless ``allow_pickle`` (the Communicator allows it on authenticated links). The
bytes themselves (plain or TLS socket, buffering, polling) are ``fmi_client.stream``'s.
"""

from __future__ import annotations

import select
import socket
import threading
from collections import defaultdict, deque
from typing import Any

from fmi_client import framing
from fmi_client.framing import (
    FIXED_SIZE,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_PICKLE,
    MAGIC,
    FrameHeader,
    FrameTooLarge,
    PickleRefused,
    np,
)
from fmi_client.safecodec import DEFAULT_MAX_MESSAGE_BYTES
from fmi_client.stream import READ_CHUNK, SMALL_FRAME, Stream

_pack_fixed = framing.FIXED_STRUCT.pack
_unpack_fixed = framing.FIXED_STRUCT.unpack_from
#: Below this, an exchange sends before it receives: the socket buffer absorbs the frame.
SMALL_EXCHANGE = 32 * 1024
ANY_USER = -2  # _read_frame's want: any user tag (>= 0); never a tag on the wire
QUEUE_ALL = -3  # _read_frame's want: every frame will be queued (pump)
#: what a queued frame counts beyond its payload (so a flood of empty frames is bounded too)
QUEUED_OVERHEAD = 64
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


class Channel(Stream):
    """The frames between us (``me``) and rank ``peer`` over ``sock``.

    ``allow_pickle``: send objects that are not plain data pickled, and load pickled
    frames (only for an authenticated peer, or when every peer is trusted).
    ``max_message_bytes`` bounds every frame and the bytes queued for unread tags.
    """

    def __init__(
        self,
        sock: socket.socket,
        me: int,
        peer: int,
        *,
        allow_pickle: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(sock, me, peer)
        self.allow_pickle = allow_pickle
        self.max_message_bytes = max_message_bytes
        self._queued_bytes = 0  # payload bytes (+ QUEUED_OVERHEAD each) of the queued frames
        self._last_size = 0
        self._sizes: defaultdict[int, deque[int]] = defaultdict(deque)
        self._queued: defaultdict[int, deque[Any]] = defaultdict(deque)
        self._order: deque[int] = deque()  # the tags of queued frames, in arrival order
        self._sender: Any = None  # an isend's thread still writing (see p2p.send_later)

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
        self._send_frame(*framing.encode(obj, tag, self.allow_pickle))

    def _send_frame(self, header: bytes, payload: memoryview | bytes) -> None:
        if self._sender is not None:
            self.finish_sending()
        self._write(header, payload)

    def _read_frame(self, out: Any = None, want: int = 0) -> tuple[int, Any]:
        """The next frame; an array lands in ``out`` only if its tag is ``want`` (or any >= 0)."""
        start, end = self._start, self._end
        if end - start >= FIXED_SIZE:  # fast path: a small non-array frame already buffered
            magic, kind, tag, length, _, _ = _unpack_fixed(self._buf, start)
            stop = start + FIXED_SIZE + length
            if magic == MAGIC and kind == KIND_BYTES and stop <= end:
                self._last_size = size = length + QUEUED_OVERHEAD
                if self._queued_bytes + size <= self.max_message_bytes:
                    self._start = stop
                    return tag, self._view[start + FIXED_SIZE : stop].tobytes()
        header = framing.decode_fixed(self._take(FIXED_SIZE))
        self._check_size(header, want)
        self._last_size = header.length + QUEUED_OVERHEAD
        if header.kind == KIND_ARRAY:
            dtype, shape = framing.decode_array_meta(header, bytes(self._take(header.meta_size)))
            if out is not None and header.tag != want and (want != ANY_USER or header.tag < 0):
                out = None
            return header.tag, self._read_array(header, dtype, shape, out)
        if header.kind == KIND_PICKLE and not self.allow_pickle:
            self.close()  # its payload is never read: the stream is out of step for good
            raise PickleRefused(
                f"rank {self.me}: rank {self.peer} sent a pickled object on a link that is "
                "not authenticated; it was not loaded and the link is closed. Give every "
                "rank the same secret (secret=... or FMI_SECRET), or pass allow_pickle=True "
                "if every peer is trusted"
            )
        limit = self.max_message_bytes
        if header.length <= READ_CHUNK:
            return header.tag, framing.decode_payload(header, self._take(header.length), limit)
        payload = bytearray(header.length)
        self._read_into(memoryview(payload))
        return header.tag, framing.decode_payload(header, payload, limit)

    def _check_size(self, header: FrameHeader, want: int) -> None:
        """Refuse (and close) before allocating: a frame over max_message_bytes, or one
        to be queued that takes the bytes queued for unread tags over it."""
        limit = self.max_message_bytes
        queued = want == QUEUE_ALL or (header.tag != want and (want != ANY_USER or header.tag < 0))
        size = header.length + QUEUED_OVERHEAD
        if header.length <= limit and not (queued and self._queued_bytes + size > limit):
            return
        self.close()
        if header.length > limit:
            what = f"a frame of {header.length} bytes (tag {header.tag})"
        else:
            what = (
                f"a frame of {header.length} bytes for tag {header.tag}, nobody has asked "
                f"for it yet and {self._queued_bytes} bytes are queued already for unread tags"
            )
        raise FrameTooLarge(
            f"rank {self.me}: rank {self.peer} sent {what}, over max_message_bytes="
            f"{limit}; refused unread and the link is closed. Raise max_message_bytes on "
            "every rank if such messages are meant, and receive every tag you send"
        )

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
        size = self._last_size  # of the frame _read_frame just returned
        self._queued[tag].append(obj)
        self._sizes[tag].append(size)
        self._queued_bytes += size
        self._order.append(tag)

    def _dequeue(self, tag: int) -> Any:
        queue = self._queued[tag]
        obj = queue.popleft()
        self._queued_bytes -= self._sizes[tag].popleft()
        if not queue:
            del self._queued[tag]
            del self._sizes[tag]
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
                if not self._decrypted() and not poller.poll(0):
                    return
                try:
                    got = self.sock.recv_into(self._view)
                except OSError as exc:
                    raise self._lost(f"receiving failed ({exc})") from exc
                if not got:
                    self.eof = True
                    return
                self._start, self._end = 0, got
            got_tag, obj = self._read_frame(None, QUEUE_ALL)
            self._enqueue(got_tag, obj)

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
        header, payload = framing.encode(obj, tag, self.allow_pickle)
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


__all__ = [
    "ANY_USER",
    "QUEUED_OVERHEAD",
    "READ_CHUNK",
    "SMALL_EXCHANGE",
    "SMALL_FRAME",
    "Channel",
    "FrameTooLarge",
    "PickleRefused",
]

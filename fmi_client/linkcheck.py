"""Link verification: before pair() hands over a punched link, both sides push a block of
bytes through it each way and acknowledge the other's, so a link that stalls after a few
KB (as FMI's users saw on AWS) is caught and re-paired instead of failing the job later.

On the wire, each side sends at once, without waiting for the other::

    offer:  b"FMIV" | version (1 byte, 1) | 3 zero bytes | length (u32, big endian)
            then ``length`` bytes of PATTERN (bytes 0..255, repeating)
    ack:    b"FMIA" | length received (u32, big endian)   -- after the peer's whole offer

A side is done when it has received the peer's whole offer and the peer's ack of its own;
both directions have then carried the data, so when the flow stalls neither side is done
and both re-pair. The lengths may differ (each side reads what the peer announces, up to
MAX_CHECK_BYTES). Sends never block on the peer (non-blocking socket, one selector) and
reads never go past the ack, so user data the peer sends straight after stays in the
socket. The building and parsing are pure functions over bytes; verify_link() does the IO.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from types import ModuleType

fcntl: ModuleType | None
termios: ModuleType | None
try:  # POSIX only: the send-queue size for _settle
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None

OFFER_MAGIC = b"FMIV"
ACK_MAGIC = b"FMIA"
VERSION = 1
OFFER_HEADER = struct.Struct(">4sB3xI")
ACK = struct.Struct(">4sI")
#: Largest offer we accept from a peer (memory is allocated for it).
MAX_CHECK_BYTES = 16 * 1024 * 1024
PATTERN = bytes(range(256))
_RECV_CAP = 256 * 1024
#: How often _settle looks whether our last bytes were acknowledged.
SETTLE_POLL = 0.0005


class CheckFailed(Exception):
    """The link check did not complete; ``stalled`` is True when the link just stopped
    carrying bytes before the deadline (worth re-pairing), False when the peer closed it
    or sent bytes that are not a link check."""

    def __init__(self, message: str, *, stalled: bool) -> None:
        super().__init__(message)
        self.stalled = stalled


def payload(length: int) -> bytes:
    """``length`` bytes of the check pattern."""
    whole, rest = divmod(length, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


def build_offer(length: int) -> bytes:
    """Our offer: the header announcing ``length`` bytes, then the bytes."""
    if not 0 < length <= MAX_CHECK_BYTES:
        raise ValueError(f"verify_bytes must be in 1..{MAX_CHECK_BYTES} (or 0 for no check)")
    return OFFER_HEADER.pack(OFFER_MAGIC, VERSION, length) + payload(length)


def parse_offer_header(header: bytes) -> int:
    """The length a peer's offer header announces; CheckFailed if it is not one."""
    if len(header) != OFFER_HEADER.size:
        raise ValueError(f"an offer header is {OFFER_HEADER.size} bytes, not {len(header)}")
    magic, version, length = OFFER_HEADER.unpack(header)
    if magic != OFFER_MAGIC or version != VERSION:
        raise CheckFailed(
            f"the peer sent {header[:8]!r}, not a link check (version {VERSION}): is it "
            "fmi_client with link verification on? Both sides need the same verify_bytes "
            "setting on or off (0 turns it off, e.g. to pair with the C++ TCPunch client).",
            stalled=False,
        )
    if not 0 < length <= MAX_CHECK_BYTES:
        raise CheckFailed(
            f"the peer announced a link check of {length} bytes; at most {MAX_CHECK_BYTES}",
            stalled=False,
        )
    return int(length)


def build_ack(received: int) -> bytes:
    return ACK.pack(ACK_MAGIC, received)


def parse_ack(data: bytes, sent: int) -> None:
    """Check the peer's ack of our ``sent``-byte offer; CheckFailed if it is not one."""
    magic, received = ACK.unpack(data)
    if magic != ACK_MAGIC or received != sent:
        raise CheckFailed(
            f"the peer's link-check ack was {data!r}, expected {build_ack(sent)!r}",
            stalled=False,
        )


class _Reader:
    """What we still expect from the peer: the offer header, its payload, then its ack."""

    def __init__(self, ours: int) -> None:
        self.ours = ours
        self.buffer = bytearray()
        self.stage = "header"
        self.offered = 0
        self.need = OFFER_HEADER.size

    def feed(self, chunk: bytes) -> bool:
        """Take bytes (never more than ``need``); True once the peer's payload is in."""
        self.buffer += chunk
        self.need -= len(chunk)
        if self.need:
            return False
        data, self.buffer = bytes(self.buffer), bytearray()
        if self.stage == "header":
            self.offered = parse_offer_header(data)
            self.stage, self.need = "payload", self.offered
            return False
        if self.stage == "payload":
            if data != payload(self.offered):
                raise CheckFailed("the link check's bytes arrived changed", stalled=False)
            self.stage, self.need = "ack", ACK.size
            return True
        parse_ack(data, self.ours)
        self.stage = "done"
        return False


def verify_link(sock: socket.socket, nbytes: int, deadline: float) -> None:
    """Run the check over ``sock`` (restored to blocking after); CheckFailed if it does
    not complete by ``deadline`` (monotonic)."""
    offer = build_offer(nbytes)
    outgoing = [memoryview(offer)]  # what is left to send, in order (then our ack)
    total = len(offer) + ACK.size
    sent = 0
    reader = _Reader(nbytes)
    sel = selectors.DefaultSelector()
    sock.setblocking(False)
    try:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while reader.stage != "done" or sent < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(
                    f"the link stalled: {sent} of {total} bytes sent and "
                    f"{reader.stage} of the peer's check pending after the deadline",
                    stalled=True,
                )
            wanted = selectors.EVENT_READ if reader.stage != "done" else 0
            if outgoing:
                wanted |= selectors.EVENT_WRITE
            sel.modify(sock, wanted)
            for _key, events in sel.select(remaining):
                if events & selectors.EVENT_WRITE:
                    try:
                        n = sock.send(outgoing[0])
                        sent += n
                        outgoing[0] = outgoing[0][n:]
                        if not outgoing[0]:
                            outgoing.pop(0)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as exc:
                        raise CheckFailed(f"sending the link check: {exc}", stalled=True) from exc
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(min(reader.need, _RECV_CAP))
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        raise CheckFailed(f"reading the link check: {exc}", stalled=True) from exc
                    if not chunk:
                        raise CheckFailed(
                            "the peer closed the link during the link check", stalled=True
                        )
                    if reader.feed(chunk):
                        outgoing.append(memoryview(build_ack(reader.offered)))
        _settle(sock, deadline)
    finally:
        sel.close()
        if sock.fileno() >= 0:
            sock.setblocking(True)


def _settle(sock: socket.socket, deadline: float) -> None:
    """Leave no byte of the check unacknowledged when the link is handed over.

    TCP keepalive (how a vanished peer is noticed) does not probe while sent data waits
    for its ACK, so a link whose peer vanished right after the check, before acking our
    last bytes, would hang on retransmissions for many minutes. So: ACK the peer's last
    bytes at once (TCP_QUICKACK, instead of the delayed ACK), and wait, at most until
    ``deadline``, for ours to be acked (the send queue, SIOCOUTQ, is empty): a round trip.
    Linux only; elsewhere a no-op."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None or fcntl is None or termios is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
    while time.monotonic() < deadline:
        try:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))
        except OSError:
            return
        if queued[0] == 0:
            return
        time.sleep(SETTLE_POLL)

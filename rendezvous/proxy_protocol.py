"""PROXY protocol version 2, receiving side: sans-IO, pure code over bytes.

A load balancer in front of the server (HAProxy ``send-proxy-v2``, an AWS NLB target
group with PROXY v2) opens its own TCP connection to us, so the socket's peer is the
balancer, not the client. Hole punching needs the client's *public* address and port,
which the balancer sends first, in a binary header (HAProxy's proxy-protocol.txt,
section 2.2):

==========  =====  ==========================================================
offset      size   field
==========  =====  ==========================================================
0           12     signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``
12          1      version (high nibble, must be 2) and command (low: 0 LOCAL, 1 PROXY)
13          1      family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport
                   (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
14          2      length of what follows, network order (addresses, then TLVs)
16          12/36  INET: src addr 4, dst addr 4, src port 2, dst port 2; INET6: 16+16+2+2
==========  =====  ==========================================================

The client's first bytes (its rendezvous request) may follow the header in the same
segment: :meth:`ProxyHeaderReader.feed` hands them back as ``rest``. Headers are
bounded before anything is buffered: the length field allows 16 + 65535 bytes, we accept
at most ``max_header_size`` (default 4096: addresses plus the TLVs HAProxy and AWS NLB
send, a few hundred bytes at most).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Literal

from tcpunch import Endpoint, NeedMoreData
from tcpunch.errors import Reason, RemoteProtocolError
from tcpunch.request import _NeedMoreData

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PREAMBLE_SIZE = 16  # signature, version/command, family/transport, length
MAX_HEADER_SIZE = PREAMBLE_SIZE + 0xFFFF  # what the length field can express
DEFAULT_MAX_HEADER_SIZE = 4096
_MIN_CAP = PREAMBLE_SIZE + 36  # every cap must at least fit an INET6 address block

Command = Literal["local", "proxy"]
Family = Literal["unspec", "inet", "inet6", "unix"]
Transport = Literal["unspec", "stream", "dgram"]

_COMMANDS: dict[int, Command] = {0x0: "local", 0x1: "proxy"}
_FAMILIES: dict[int, Family] = {0x0: "unspec", 0x1: "inet", 0x2: "inet6", 0x3: "unix"}
_TRANSPORTS: dict[int, Transport] = {0x0: "unspec", 0x1: "stream", 0x2: "dgram"}
_ADDRESS_SIZE: dict[Family, int] = {"unspec": 0, "inet": 12, "inet6": 36, "unix": 216}


class ProxyReason(str, enum.Enum):
    """Why a PROXY header was refused: stable codes for metric labels and logs."""

    BAD_SIGNATURE = "proxy_bad_signature"
    BAD_VERSION = "proxy_bad_version"
    BAD_COMMAND = "proxy_bad_command"
    BAD_FAMILY = "proxy_bad_family"
    SHORT_ADDRESSES = "proxy_short_addresses"
    TOO_LONG = "proxy_header_too_long"
    CLOSED = "proxy_closed_in_header"


# The nearest tcpunch code, so callers that classify every RemoteProtocolError by
# ``.reason`` keep working; ``proxy_reason`` is the precise one.
_TCPUNCH_REASON: dict[ProxyReason, Reason] = {
    ProxyReason.BAD_SIGNATURE: Reason.UNEXPECTED,
    ProxyReason.BAD_VERSION: Reason.UNEXPECTED,
    ProxyReason.BAD_COMMAND: Reason.BAD_COMMAND,
    ProxyReason.BAD_FAMILY: Reason.BAD_ENDPOINT,
    ProxyReason.SHORT_ADDRESSES: Reason.WRONG_SIZE,
    ProxyReason.TOO_LONG: Reason.OVERSIZED,
    ProxyReason.CLOSED: Reason.CLOSED,
}


class ProxyProtocolError(RemoteProtocolError):
    """The balancer (or whoever connected) sent no valid PROXY v2 header."""

    def __init__(self, message: str, proxy_reason: ProxyReason) -> None:
        super().__init__(message, _TCPUNCH_REASON[proxy_reason])
        self.proxy_reason = proxy_reason


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source``/``destination`` are set for TCP over IPv4/IPv6
    with the PROXY command; None for LOCAL (a balancer's own health check: use the
    socket's peer), UNSPEC, UNIX and UDP (the spec lets receivers ignore those addresses)."""

    command: Command
    family: Family
    transport: Transport
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: bytes  # type-length-value extensions, unparsed (we need none of them)
    size: int  # bytes the header took on the wire

    def client_endpoint(self) -> Endpoint | None:
        """The client's IPv4 endpoint for TCPunch replies, None when there is none.

        IPv4-mapped IPv6 sources (``::ffff:a.b.c.d``, dual-stack balancers) are unmapped;
        a native IPv6 client has no endpoint TCPunch can carry (IPv4 only).
        """
        if self.source is None:
            return None
        host, port = self.source
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is None:
                return None
            address = address.ipv4_mapped
        return Endpoint(str(address), port)


@dataclass(frozen=True)
class Parsed:
    """The header plus the bytes that followed it in the same reads (the client's data)."""

    header: ProxyHeader
    rest: bytes


class _State(enum.Enum):
    PREAMBLE = "preamble"  # waiting for the 16 fixed bytes
    BODY = "body"  # waiting for ``length`` bytes of addresses and TLVs
    DONE = "done"
    ERROR = "error"


class _Event(enum.Enum):
    PREAMBLE_OK = "preamble_ok"
    BODY_OK = "body_ok"
    INVALID = "invalid"


# Explicit transitions; anything not listed is a bug in this module.
_TRANSITIONS: dict[tuple[_State, _Event], _State] = {
    (_State.PREAMBLE, _Event.PREAMBLE_OK): _State.BODY,
    (_State.PREAMBLE, _Event.INVALID): _State.ERROR,
    (_State.BODY, _Event.BODY_OK): _State.DONE,
    (_State.BODY, _Event.INVALID): _State.ERROR,
}


class ProxyHeaderReader:
    """Feed it the first bytes of a connection; it returns :class:`Parsed` once the
    header is complete, ``NeedMoreData`` before, or raises :class:`ProxyProtocolError`.

    A wrong signature byte is refused as soon as it arrives (a client that bypassed the
    balancer is told at once, not after a timeout). One reader per connection.
    """

    __slots__ = ("_buffer", "_command", "_family", "_length", "_max", "_state", "_transport")

    def __init__(self, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> None:
        if not _MIN_CAP <= max_header_size <= MAX_HEADER_SIZE:
            raise ValueError(
                f"max_header_size must be in {_MIN_CAP}..{MAX_HEADER_SIZE}, got {max_header_size}"
            )
        self._max = max_header_size
        self._buffer = bytearray()
        self._state = _State.PREAMBLE
        self._command: Command = "local"
        self._family: Family = "unspec"
        self._transport: Transport = "unspec"
        self._length = 0

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> Parsed | _NeedMoreData:
        if self._state in (_State.DONE, _State.ERROR):
            raise RuntimeError(f"feed() after the header reader finished ({self._state.value})")
        try:
            return self._feed(data)
        except ProxyProtocolError:
            self._state = _TRANSITIONS[(self._state, _Event.INVALID)]
            raise

    def eof(self) -> None:
        """The connection ended: before a complete header that is an error."""
        if self._state is not _State.DONE:
            raise ProxyProtocolError(
                f"connection closed after {len(self._buffer)} bytes of a PROXY v2 header",
                ProxyReason.CLOSED,
            )

    def _feed(self, data: bytes) -> Parsed | _NeedMoreData:
        if self._state is _State.PREAMBLE:
            # Check the signature before buffering: a stranger's bytes stop at once.
            have = len(self._buffer)
            if have < len(SIGNATURE):
                chunk = data[: len(SIGNATURE) - have]
                if SIGNATURE[have : have + len(chunk)] != chunk:
                    raise _bad_signature(bytes(self._buffer) + chunk)
            self._buffer += data[: PREAMBLE_SIZE - have]
            data = data[PREAMBLE_SIZE - have :]
            if len(self._buffer) < PREAMBLE_SIZE:
                return NeedMoreData
            self._read_preamble(bytes(self._buffer))
            self._state = _TRANSITIONS[(self._state, _Event.PREAMBLE_OK)]
        need = PREAMBLE_SIZE + self._length - len(self._buffer)
        self._buffer += data[:need]
        if len(self._buffer) < PREAMBLE_SIZE + self._length:
            return NeedMoreData
        header = self._read_body(bytes(self._buffer[PREAMBLE_SIZE:]))
        self._state = _TRANSITIONS[(self._state, _Event.BODY_OK)]
        self._buffer = bytearray()
        return Parsed(header, bytes(data[need:]))

    def _read_preamble(self, preamble: bytes) -> None:
        version, command = preamble[12] >> 4, preamble[12] & 0x0F
        if version != 2:
            raise ProxyProtocolError(
                f"PROXY header version {version}, only version 2 is supported "
                "(configure the balancer with send-proxy-v2 / proxy protocol v2)",
                ProxyReason.BAD_VERSION,
            )
        if command not in _COMMANDS:
            raise ProxyProtocolError(
                f"PROXY v2 command 0x{command:x} is neither LOCAL (0) nor PROXY (1)",
                ProxyReason.BAD_COMMAND,
            )
        family, transport = preamble[13] >> 4, preamble[13] & 0x0F
        if family not in _FAMILIES or transport not in _TRANSPORTS:
            raise ProxyProtocolError(
                f"PROXY v2 family/transport byte 0x{preamble[13]:02x} is not defined",
                ProxyReason.BAD_FAMILY,
            )
        length = int.from_bytes(preamble[14:16], "big")
        if PREAMBLE_SIZE + length > self._max:
            raise ProxyProtocolError(
                f"PROXY v2 header of {PREAMBLE_SIZE + length} bytes is over this "
                f"server's cap of {self._max}",
                ProxyReason.TOO_LONG,
            )
        self._command = _COMMANDS[command]
        self._family = _FAMILIES[family]
        self._transport = _TRANSPORTS[transport]
        if self._command == "proxy" and length < _ADDRESS_SIZE[self._family]:
            raise ProxyProtocolError(
                f"PROXY v2 {self._family} addresses take {_ADDRESS_SIZE[self._family]} "
                f"bytes, the header announces {length}",
                ProxyReason.SHORT_ADDRESSES,
            )
        self._length = length

    def _read_body(self, body: bytes) -> ProxyHeader:
        size = PREAMBLE_SIZE + len(body)
        usable = self._command == "proxy" and self._family in ("inet", "inet6")
        if not usable or self._transport != "stream":
            # LOCAL, UNSPEC, UNIX or UDP: addresses (if any) are skipped, as the spec lets
            # a receiver fall back to UNSPEC for what it does not implement.
            return ProxyHeader(self._command, self._family, self._transport, None, None, b"", size)
        width = 4 if self._family == "inet" else 16
        block = 2 * width + 4
        source_ip = ipaddress.ip_address(body[:width])
        destination_ip = ipaddress.ip_address(body[width : 2 * width])
        source_port = int.from_bytes(body[2 * width : 2 * width + 2], "big")
        destination_port = int.from_bytes(body[2 * width + 2 : block], "big")
        return ProxyHeader(
            self._command,
            self._family,
            self._transport,
            (str(source_ip), source_port),
            (str(destination_ip), destination_port),
            body[block:],
            size,
        )


def _bad_signature(seen: bytes) -> ProxyProtocolError:
    hint = ""
    if seen.startswith(b"PROXY"[: len(seen)]) and seen:
        hint = " (this looks like the text PROXY v1; configure the balancer for v2)"
    return ProxyProtocolError(
        f"the connection did not start with the PROXY v2 signature{hint}; the server runs "
        "with --proxy-protocol, so every connection must come through the balancer",
        ProxyReason.BAD_SIGNATURE,
    )


def build_header(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    command: Command = "proxy",
    tlvs: bytes = b"",
) -> bytes:
    """A PROXY v2 header for TCP (tests and benchmarks play the balancer with it).

    With ``source`` None the header is LOCAL/UNSPEC, as balancers send for health checks.
    """
    version_command = 0x20 | (0x1 if command == "proxy" else 0x0)
    if source is None or destination is None:
        return SIGNATURE + bytes([version_command, 0x00]) + len(tlvs).to_bytes(2, "big") + tlvs
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("source and destination must both be IPv4 or both IPv6")
    family_transport = 0x11 if src.version == 4 else 0x21
    body = (
        src.packed
        + dst.packed
        + source[1].to_bytes(2, "big")
        + destination[1].to_bytes(2, "big")
        + tlvs
    )
    preamble = SIGNATURE + bytes([version_command, family_transport])
    return preamble + len(body).to_bytes(2, "big") + body

"""How a v2 request carries a rendezvous credential: a flag bit and a trailer.

The fork's 141-byte request keeps its layout. Bit 0 of the 4-byte flags field (offset
137, network order; the fork sends zero there; bits 1-3 are NAT hints,
:mod:`tcpunch.nathint`) announces a trailer right after byte 141::

    141-byte v2 request (flags & FLAG_CREDENTIAL) | length:u16 | credential (UTF-8)

``length`` is 1..MAX_TRAILER_CREDENTIAL. A request with the flag clear is exactly what
the fork's clients send today, byte for byte, and needs no trailer. Only clients given a
credential set the flag, so no deployed client is affected. A server without an auth
secret still reads (and ignores) the trailer, so a credentialed client pairs with it.
"""

from __future__ import annotations

import struct

from tcpunch.errors import LocalProtocolError, Reason, RemoteProtocolError

FLAG_CREDENTIAL = 0x0000_0001
#: Wire facts of v2 (PROTOCOL.md); tests check them against tcpunch's own codec.
V2_REQUEST_SIZE = 141
V2_FLAGS_OFFSET = 137
TRAILER_LENGTH_SIZE = 2
#: A bound on the announced length, far above any credential tcpunch.credential mints.
MAX_TRAILER_CREDENTIAL = 512
_LENGTH = struct.Struct("!H")


def request_flags(request: bytes | bytearray | memoryview) -> int:
    """The flags field of a (complete) 141-byte v2 request."""
    if len(request) < V2_REQUEST_SIZE:
        raise LocalProtocolError(
            f"the flags are bytes 137..141 of a v2 request; got {len(request)} bytes",
            Reason.WRONG_SIZE,
        )
    (flags,) = struct.unpack_from("!I", request, V2_FLAGS_OFFSET)
    return int(flags)


def announces_credential(request: bytes | bytearray | memoryview) -> bool:
    """Whether a complete 141-byte v2 request is followed by a credential trailer."""
    return bool(request_flags(request) & FLAG_CREDENTIAL)


def encode_trailer(credential: str) -> bytes:
    """The length-prefixed trailer carrying ``credential``."""
    raw = credential.encode("utf-8")
    if not raw:
        raise LocalProtocolError("a credential must not be empty", Reason.EMPTY_NAME)
    if len(raw) > MAX_TRAILER_CREDENTIAL:
        raise LocalProtocolError(
            f"a credential is at most {MAX_TRAILER_CREDENTIAL} bytes, got {len(raw)}",
            Reason.NAME_TOO_LONG,
        )
    return _LENGTH.pack(len(raw)) + raw


def with_credential(request: bytes, credential: str) -> bytes:
    """A 141-byte v2 request (from ``encode_v2_request``) with the flag set and the trailer."""
    if len(request) != V2_REQUEST_SIZE:
        raise LocalProtocolError(
            f"a v2 request is {V2_REQUEST_SIZE} bytes, got {len(request)}", Reason.WRONG_SIZE
        )
    flags = request_flags(request) | FLAG_CREDENTIAL
    head = request[:V2_FLAGS_OFFSET] + struct.pack("!I", flags)
    return head + encode_trailer(credential)


def trailer_size(after_request: bytes | bytearray | memoryview) -> int | None:
    """The trailer's total size from the bytes after byte 141, or None until 2 are there.

    Raises RemoteProtocolError for an announced length of 0 or over the bound, before
    anything is buffered for it.
    """
    if len(after_request) < TRAILER_LENGTH_SIZE:
        return None
    (length,) = _LENGTH.unpack_from(after_request, 0)
    if length == 0:
        raise RemoteProtocolError("the credential trailer is empty", Reason.WRONG_SIZE)
    if length > MAX_TRAILER_CREDENTIAL:
        raise RemoteProtocolError(
            f"the credential trailer announces {length} bytes, at most "
            f"{MAX_TRAILER_CREDENTIAL} are allowed",
            Reason.OVERSIZED,
        )
    return TRAILER_LENGTH_SIZE + int(length)


def decode_trailer(trailer: bytes | bytearray | memoryview) -> str:
    """The credential of exactly one complete trailer (length prefix included)."""
    size = trailer_size(trailer)
    if size is None or len(trailer) < size:
        raise RemoteProtocolError("the credential trailer is incomplete", Reason.WRONG_SIZE)
    if len(trailer) > size:
        raise RemoteProtocolError(
            f"{len(trailer) - size} unexpected bytes after the credential trailer",
            Reason.TRAILING_BYTES,
        )
    try:
        return bytes(trailer[TRAILER_LENGTH_SIZE:]).decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("the credential trailer is not UTF-8", Reason.NOT_UTF8) from None


def split_request(buffer: bytes | bytearray) -> tuple[bytes, str | None] | None:
    """Split a complete v2 request (141 bytes, maybe a trailer) off ``buffer``.

    Returns None while more bytes are needed, else (the 141 request bytes, the credential
    or None). The reference for the server's RequestReader: bytes beyond the request and
    its trailer raise TRAILING_BYTES, as today's reader does for bytes beyond 141.
    """
    if len(buffer) < V2_REQUEST_SIZE:
        return None
    request = bytes(buffer[:V2_REQUEST_SIZE])
    rest = buffer[V2_REQUEST_SIZE:]
    if not announces_credential(request):
        if rest:
            raise RemoteProtocolError(
                f"a v2 request is {V2_REQUEST_SIZE} bytes, got {len(buffer)} or more",
                Reason.OVERSIZED,
            )
        return request, None
    size = trailer_size(rest)
    if size is None or len(rest) < size:
        return None
    return request, decode_trailer(rest)

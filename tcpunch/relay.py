"""Extension requests on the rendezvous port: a relay session, or "what is my endpoint?".

Both kinds share port 10000 with v1 and v2, so they must never look like either. A v1
name never holds a NUL; a v2 request is 141 bytes whose name field is NUL-terminated and
never empty, so a valid v2 request never *starts* with NUL. An extension request starts
with the magic ``00 54 50 58`` (NUL, ``TPX``): no valid v1 or v2 request does.

Request (big-endian, every length checked before anything is allocated)::

    offset  size  field
    0       4     magic 00 54 50 58 ("\\0TPX")
    4       1     version, 01
    5       1     kind: 01 RELAY, 02 OBSERVE
    -- OBSERVE ends here (6 bytes); the server answers 8 bytes as v1 does (your
       IPv4 address, your port, 2 zero bytes) and closes.
    6       1     name length N, 1..100
    7       N     pairing name, raw bytes without NUL (as in v1)
    7+N     16    session id: both ends send the same; default derive_session(name)
                  (pairing_session: from the two endpoints the rendezvous reported)
    23+N    2     credential length C, 0..512
    25+N    C     credential (issue 11: a TURN-REST-style credential; ignored by a
                  server without an auth secret)

RELAY reply: 2 bytes, status then reason. ``01 00`` WAITING_FOR_PEER (the other end
has not asked yet; an ACCEPTED or a REFUSED follows), ``02 00`` ACCEPTED (from the next
byte on, the connection carries the peer's bytes raw, both ways, until either side
closes or a limit ends it with a reset), ``03 RR`` REFUSED with a :class:`RelayRefusal`.

Byte vector: name ``fmi_pair0_1``, derived session, no credential::

    00 54 50 58 01 01 0b 66 6d 69 5f 70 61 69 72 30 5f 31
    37 16 6f 93 11 9a 77 8d de 0e b9 dd f4 f3 ab d5 00 00

The server matches the two ends by (name, session id). A multi-replica server can use
the same key to place both ends on one replica (hash it to a replica, or redirect).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from tcpunch.endpoint import pack_endpoint
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from tcpunch.request import NeedMoreData, Request, RequestReader, _NeedMoreData
from tcpunch.v1 import V1_MAX_NAME

EXT_MAGIC = b"\x00TPX"
EXT_VERSION = 1
KIND_RELAY = 1
KIND_OBSERVE = 2
SESSION_SIZE = 16
MAX_CREDENTIAL = 512
MAX_EXT_REQUEST = len(EXT_MAGIC) + 3 + V1_MAX_NAME + SESSION_SIZE + 2 + MAX_CREDENTIAL
REPLY_SIZE = 2
OBSERVE_REQUEST = EXT_MAGIC + bytes([EXT_VERSION, KIND_OBSERVE])


class RelayStatus(enum.IntEnum):
    WAITING_FOR_PEER = 1
    ACCEPTED = 2
    REFUSED = 3


class RelayRefusal(enum.IntEnum):
    """Why the server refused a relay session (the reply's second byte)."""

    NONE = 0
    DISABLED = 1  # the server runs with --no-relay
    SERVER_FULL = 2  # --relay-max-sessions reached
    PER_IP_CAP = 3  # --relay-max-per-ip reached for this source address
    BUSY = 4  # a session with this name and id is already relaying
    PEER_TIMEOUT = 5  # the other end did not ask within the server's peer timeout
    BAD_CREDENTIAL = 6  # the server has an auth secret and the credential failed
    DRAINING = 7  # the server is shutting down
    MALFORMED = 8  # (not sent for bad bytes: those are closed; kept for clients)
    NAME_PATTERN = 9  # the name does not match the server's --name-pattern


@dataclass(frozen=True)
class RelayRequest:
    name: bytes
    session: bytes
    credential: bytes = b""


@dataclass(frozen=True)
class ObserveRequest:
    """Asks for the endpoint the server sees (NAT discovery on the rendezvous port)."""


@dataclass(frozen=True)
class RelayReply:
    status: RelayStatus
    refusal: RelayRefusal = RelayRefusal.NONE


def derive_session(name: bytes) -> bytes:
    """The session id both ends compute from the pairing name alone."""
    return hashlib.sha256(b"tcpunch relay session\0" + name).digest()[:SESSION_SIZE]


def pairing_session(name: bytes, ours: tuple[str, int], theirs: tuple[str, int]) -> bytes:
    """The session id of one pairing: both ends compute it from the rendezvous's answer.

    The two public endpoints the server reported (sorted, so both ends agree) change
    from run to run, so a relay session left over from an earlier run under the same
    name (FMI reuses names) never blocks this one. Prefer it to :func:`derive_session`.
    """
    first, second = sorted((pack_endpoint(*ours), pack_endpoint(*theirs)))
    digest = hashlib.sha256(b"tcpunch relay pairing\0" + first + second + name)
    return digest.digest()[:SESSION_SIZE]


def _check_name(name: bytes, error: type[LocalProtocolError | RemoteProtocolError]) -> None:
    if not name:
        raise error("a relay pairing name must not be empty", Reason.EMPTY_NAME)
    if len(name) > V1_MAX_NAME:
        raise error(f"a relay pairing name is at most {V1_MAX_NAME} bytes", Reason.NAME_TOO_LONG)
    if b"\0" in name:
        raise error("a relay pairing name must not contain a NUL byte", Reason.NUL_IN_NAME)


def encode_relay_request(request: RelayRequest) -> bytes:
    _check_name(request.name, LocalProtocolError)
    if len(request.session) != SESSION_SIZE:
        raise LocalProtocolError(f"a session id is {SESSION_SIZE} bytes", Reason.BAD_TOKEN)
    if len(request.credential) > MAX_CREDENTIAL:
        raise LocalProtocolError(
            f"a relay credential is at most {MAX_CREDENTIAL} bytes", Reason.OVERSIZED
        )
    return b"".join(
        (
            EXT_MAGIC,
            bytes((EXT_VERSION, KIND_RELAY, len(request.name))),
            request.name,
            request.session,
            len(request.credential).to_bytes(2, "big"),
            request.credential,
        )
    )


def encode_relay_reply(reply: RelayReply) -> bytes:
    return bytes((reply.status, reply.refusal))


def decode_relay_reply(data: bytes) -> RelayReply:
    if len(data) != REPLY_SIZE:
        raise RemoteProtocolError(f"a relay reply is {REPLY_SIZE} bytes", Reason.WRONG_SIZE)
    try:
        status = RelayStatus(data[0])
    except ValueError:
        raise RemoteProtocolError(
            f"unknown relay status {data[0]}", Reason.UNKNOWN_STATUS
        ) from None
    try:
        refusal = RelayRefusal(data[1])
    except ValueError:
        raise RemoteProtocolError(
            f"unknown relay refusal {data[1]}", Reason.UNKNOWN_STATUS
        ) from None
    if (status is RelayStatus.REFUSED) != (refusal is not RelayRefusal.NONE):
        raise RemoteProtocolError("refusal reason and status disagree", Reason.UNEXPECTED)
    return RelayReply(status, refusal)


def parse_ext_request(buffer: bytes) -> RelayRequest | ObserveRequest | None:
    """The request at the start of ``buffer``, or None while it is incomplete.

    Raises RemoteProtocolError for bytes no client sends, and for bytes after the request.
    """
    head = buffer[:4]
    if head != EXT_MAGIC[: len(head)]:
        raise RemoteProtocolError("not an extension request (bad magic)", Reason.UNEXPECTED)
    if len(buffer) < 6:
        return None
    if buffer[4] != EXT_VERSION:
        raise RemoteProtocolError(f"unknown extension version {buffer[4]}", Reason.UNEXPECTED)
    kind = buffer[5]
    if kind == KIND_OBSERVE:
        if len(buffer) > 6:
            raise RemoteProtocolError("bytes after an OBSERVE request", Reason.TRAILING_BYTES)
        return ObserveRequest()
    if kind != KIND_RELAY:
        raise RemoteProtocolError(f"unknown extension kind {kind}", Reason.UNEXPECTED)
    if len(buffer) < 7:
        return None
    size = buffer[6]
    end_name = 7 + size
    if len(buffer) < end_name + SESSION_SIZE + 2:
        if size == 0 or size > V1_MAX_NAME:
            _check_name(b"x" * size, RemoteProtocolError)
        return None
    name = bytes(buffer[7:end_name])
    _check_name(name, RemoteProtocolError)
    session = bytes(buffer[end_name : end_name + SESSION_SIZE])
    at = end_name + SESSION_SIZE
    cred_size = int.from_bytes(buffer[at : at + 2], "big")
    if cred_size > MAX_CREDENTIAL:
        raise RemoteProtocolError(
            f"a relay credential is at most {MAX_CREDENTIAL} bytes, got {cred_size}",
            Reason.OVERSIZED,
        )
    end = at + 2 + cred_size
    if len(buffer) < end:
        return None
    if len(buffer) > end:
        raise RemoteProtocolError(
            "bytes after a relay request before ACCEPTED", Reason.TRAILING_BYTES
        )
    return RelayRequest(name, session, bytes(buffer[at + 2 : end]))


ExtRequest = RelayRequest | ObserveRequest


class ServerRequestReader:
    """The rendezvous port's reader: v1, v2 and the extension requests above.

    A first byte other than NUL (every v1 name, every valid v2 request) goes straight to
    :class:`~tcpunch.request.RequestReader`, at the cost of one comparison. A leading NUL
    waits for four bytes: the magic makes it an extension request, anything else goes to
    the v2 reader as before (which refuses a v2 request with an empty name).
    """

    __slots__ = ("_done", "_ext", "_inner")

    def __init__(self) -> None:
        self._inner = RequestReader()
        self._ext: bytearray | None = None  # set while the bytes start with NUL
        self._done = False

    @property
    def done(self) -> bool:
        return self._done or self._inner.done

    @property
    def buffered(self) -> int:
        return self._inner.buffered if self._ext is None else len(self._ext)

    def eof(self) -> ProtocolError:
        if self._ext is None:
            return self._inner.eof()
        return RemoteProtocolError(
            f"the connection closed after {len(self._ext)} bytes of an incomplete request",
            Reason.CLOSED,
        )

    def feed(self, data: bytes) -> Request | ExtRequest | _NeedMoreData:
        ext = self._ext
        if ext is None:
            inner = self._inner
            if data[:1] != b"\0" or inner.buffered or inner.done:
                return inner.feed(data)
            ext = self._ext = bytearray()
        if self._done:
            raise RemoteProtocolError(
                f"{len(data)} unexpected bytes after the request", Reason.TRAILING_BYTES
            )
        ext += data
        if len(ext) < 4:
            if EXT_MAGIC.startswith(ext):
                return NeedMoreData
        elif ext[:4] == EXT_MAGIC:
            if len(ext) > MAX_EXT_REQUEST:
                raise RemoteProtocolError("an extension request is too long", Reason.OVERSIZED)
            request = parse_ext_request(bytes(ext))
            if request is None:
                return NeedMoreData
            self._done = True
            return request
        # a leading NUL that is not the magic: v2's rules decide, as they always did
        held = bytes(ext)
        self._ext = None
        return self._inner.feed(held)

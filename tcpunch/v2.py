"""Protocol v2, the fork's fixed-size messages: 141-byte requests, 51-byte responses.

Responses carry 50 bytes of fields and one trailing byte: the clients in the field read
51 bytes per response, so the 51st byte is part of the wire format. It is zero, except
in a PAIRED response to a requester that asked for NAT hints (flag bit 1): then it
carries the peer's NAT class (:mod:`tcpunch.nathint`).
"""

from __future__ import annotations

import enum
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpunch.endpoint import (
    Endpoint,
    _ipv4_packed,
    _new_endpoint,
    check_ip_port,
    unpack_ip_port,
)
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from tcpunch.nathint import HINT_BYTE, NatClass, decode_hint, flags_nat, reads_hints
from tcpunch.v2credential import FLAG_CREDENTIAL, encode_trailer, with_credential

V2_NAME_FIELD = 100
V2_TOKEN_FIELD = 37
V2_FLAGS_FIELD = 4
V2_REQUEST_SIZE = V2_NAME_FIELD + V2_TOKEN_FIELD + V2_FLAGS_FIELD  # 141
V2_RESPONSE_SIZE = 51
NO_TOKEN = ""
_MAX_FLAGS = 0xFFFFFFFF

_ZERO_ENDPOINT = _new_endpoint(Endpoint, ("0.0.0.0", 0))
_FLAGS = struct.Struct("!I")
# status, your address and port, the peer's, the token field, the 51st byte (NAT hint)
_RESPONSE = struct.Struct("!B4sH4sH37sB")
_CANONICAL_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Status(enum.IntEnum):
    WAITING = 0
    PAIRED = 1
    TIMEOUT = 2
    ERROR = 3


def _cstring(field: bytes, what: str) -> bytes:
    end = field.find(b"\0")
    if end < 0:
        raise RemoteProtocolError(f"the {what} field is not NUL-terminated", Reason.NOT_TERMINATED)
    return field[:end]


def _encode_cstring(value: bytes, size: int, what: str) -> bytes:
    if b"\0" in value:
        raise LocalProtocolError(f"the {what} must not contain a NUL byte", Reason.NUL_IN_NAME)
    if len(value) > size - 1:
        raise LocalProtocolError(
            f"the {what} is at most {size - 1} bytes, got {len(value)}", Reason.NAME_TOO_LONG
        )
    return value.ljust(size, b"\0")


def check_token(token: str, error: type[ProtocolError] = LocalProtocolError) -> str:
    """The canonical text of a reconnect token (``NO_TOKEN`` stays so); ``error`` if bad."""
    if type(token) is not str:
        raise error(f"a reconnect token is a str, not {type(token).__name__}", Reason.WRONG_TYPE)
    if token == NO_TOKEN or _CANONICAL_UUID.fullmatch(token):
        return token  # the usual case, without uuid's slower parse
    try:
        return str(uuid.UUID(token))
    except ValueError as exc:
        raise error(f"the reconnect token {token[:40]!r} is not a UUID", Reason.BAD_TOKEN) from exc


def _v2_name_bytes(name: str) -> bytes:
    """The UTF-8 bytes of a v2 name, checked: 1..99 bytes, no NUL (LocalProtocolError)."""
    if type(name) is not str:
        raise LocalProtocolError(
            f"a v2 pairing name is a str, not {type(name).__name__}", Reason.WRONG_TYPE
        )
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"the pairing name {name[:40]!r} cannot be encoded as UTF-8", Reason.NOT_UTF8
        ) from exc
    if not raw:
        raise LocalProtocolError("a pairing name must not be empty", Reason.EMPTY_NAME)
    if b"\0" in raw:
        raise LocalProtocolError("the pairing name must not contain a NUL byte", Reason.NUL_IN_NAME)
    if len(raw) > V2_NAME_FIELD - 1:
        raise LocalProtocolError(
            f"the pairing name is at most {V2_NAME_FIELD - 1} bytes, got {len(raw)}",
            Reason.NAME_TOO_LONG,
        )
    return raw


def _check_credential(credential: str) -> None:
    if type(credential) is not str:
        raise LocalProtocolError(
            f"a credential is a str, not {type(credential).__name__}", Reason.WRONG_TYPE
        )
    try:
        encode_trailer(credential)  # its length and encoding, never its text, in errors
    except UnicodeEncodeError:
        raise LocalProtocolError("a credential must be UTF-8 text", Reason.NOT_UTF8) from None


def _check_flags(flags: int) -> None:
    if type(flags) is not int:
        raise LocalProtocolError(
            f"v2 flags are an int, not {type(flags).__name__}", Reason.WRONG_TYPE
        )
    if not 0 <= flags <= _MAX_FLAGS:
        raise LocalProtocolError(f"v2 flags {flags} are outside 0..2**32-1", Reason.BAD_FLAGS)


@dataclass(frozen=True, slots=True)
class V2Request:
    """A v2 request. ``token`` is ``NO_TOKEN`` for a fresh arrival.

    Validated at construction: the name is 1..99 UTF-8 bytes without NUL, the token a
    UUID (stored in canonical form) or ``NO_TOKEN`` (it lets its holder take over the
    wait: never in the repr), the flags fit 32 bits, the credential (a bearer token:
    never in the repr) None or 1..512 UTF-8 bytes; anything
    else raises LocalProtocolError. A request with a credential has flag bit 0 set (it
    is set if not given) and goes on the wire with the credential in a trailer
    (``tcpunch.v2credential``). Bits 1-3 ask for and report NAT hints
    (``tcpunch.nathint.hint_flags``); bits 4-31 are reserved (zero) and ignored.
    """

    name: str
    token: str = field(default=NO_TOKEN, repr=False)  # a bearer secret: never in a repr
    flags: int = 0
    credential: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _v2_name_bytes(self.name)
        token = check_token(self.token)
        if token != self.token:
            object.__setattr__(self, "token", token)
        _check_flags(self.flags)
        if self.credential is not None:
            _check_credential(self.credential)
            if not self.flags & FLAG_CREDENTIAL:  # the flags say what the wire says
                object.__setattr__(self, "flags", self.flags | FLAG_CREDENTIAL)

    def encode(self) -> bytes:
        """The bytes on the wire: 141, plus the credential trailer when there is one."""
        request = (
            _v2_name_bytes(self.name).ljust(V2_NAME_FIELD, b"\0")
            + self.token.encode("ascii").ljust(V2_TOKEN_FIELD, b"\0")
            + _FLAGS.pack(self.flags)
        )
        if self.credential is None:
            return request
        return with_credential(request, self.credential)

    @property
    def reads_hints(self) -> bool:
        """Whether the requester reads the peer's NAT class in a PAIRED response."""
        return reads_hints(self.flags)

    @property
    def nat(self) -> NatClass:
        """The requester's own NAT class as it reports it (UNKNOWN: none)."""
        return flags_nat(self.flags)


_new_request = object.__new__
# The slots' descriptors: setting through them skips the frozen dataclass's __setattr__.
_set_request_name: Callable[[V2Request, str], None] = V2Request.__dict__["name"].__set__
_set_request_token: Callable[[V2Request, str], None] = V2Request.__dict__["token"].__set__
_set_request_flags: Callable[[V2Request, int], None] = V2Request.__dict__["flags"].__set__
_set_request_credential: Callable[[V2Request, str | None], None] = V2Request.__dict__[
    "credential"
].__set__


def _decoded_v2_request(
    name: str, token: str, flags: int, credential: str | None = None
) -> V2Request:
    """A V2Request from fields decode_v2_request has checked (as RemoteProtocolError):
    the server decodes one per v2 request, and checking the token twice costs a UUID parse.
    ``credential``: decoded from its bounded trailer (tcpunch.v2credential), or None."""
    request: V2Request = _new_request(V2Request)
    _set_request_name(request, name)
    _set_request_token(request, token)
    _set_request_flags(request, flags)
    _set_request_credential(request, credential)
    return request


def encode_v2_request(
    name: str, token: str = NO_TOKEN, flags: int = 0, credential: str | None = None
) -> bytes:
    """The bytes of ``V2Request(name, token, flags, credential)`` (LocalProtocolError if
    invalid): 141 without a credential, as every client of the fork sends."""
    return V2Request(name, token, flags, credential).encode()


def decode_v2_request(data: bytes, credential: str | None = None) -> V2Request:
    """Parse exactly 141 bytes; every malformation raises ProtocolError saying which.

    ``credential`` is what the request's trailer carried (RequestReader splits it off
    with ``tcpunch.v2credential.split_request``); it is attached as is."""
    if len(data) != V2_REQUEST_SIZE:
        raise RemoteProtocolError(
            f"a v2 request is {V2_REQUEST_SIZE} bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    raw_name = _cstring(data[:V2_NAME_FIELD], "pairing name")
    if not raw_name:
        raise RemoteProtocolError("the pairing name is empty", Reason.EMPTY_NAME)
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"the pairing name is not UTF-8: {raw_name[:40]!r}", Reason.NOT_UTF8
        ) from exc
    token_field = data[V2_NAME_FIELD : V2_NAME_FIELD + V2_TOKEN_FIELD]
    raw_token = _cstring(token_field, "reconnect token")
    try:
        token = check_token(raw_token.decode("ascii"), RemoteProtocolError)
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("the reconnect token is not ASCII", Reason.BAD_TOKEN) from exc
    (flags,) = _FLAGS.unpack(data[V2_NAME_FIELD + V2_TOKEN_FIELD :])
    return _decoded_v2_request(name, token, flags, credential)


def _check_endpoint(endpoint: object, what: str) -> Endpoint:
    """An Endpoint (checked when it was built) as is; an (ip, port) tuple checked."""
    if type(endpoint) is Endpoint:
        return endpoint
    if not isinstance(endpoint, tuple) or len(endpoint) != 2:
        raise LocalProtocolError(f"{what} is an (ip, port) Endpoint", Reason.WRONG_TYPE)
    ip, port = endpoint
    check_ip_port(ip, port)
    return _new_endpoint(Endpoint, (ip, port))


@dataclass(frozen=True, slots=True)
class V2Response:
    """A v2 response. Validated at construction: a known status, IPv4 endpoints with
    ports in 0..65535, a UUID token (stored canonical, never in the repr) or ``NO_TOKEN``,
    ``peer_nat`` None (byte 50 zero) or a NatClass, and then only when PAIRED."""

    status: Status
    you: Endpoint = _ZERO_ENDPOINT
    peer: Endpoint = _ZERO_ENDPOINT
    token: str = field(default=NO_TOKEN, repr=False)  # a bearer secret: never in a repr
    peer_nat: NatClass | None = None  # the peer's NAT class, for a hint-reading requester

    def __post_init__(self) -> None:
        if type(self.status) is not Status:
            try:
                status = Status(self.status)
            except ValueError as exc:
                raise LocalProtocolError(
                    f"unknown v2 status {self.status!r}", Reason.UNKNOWN_STATUS
                ) from exc
            object.__setattr__(self, "status", status)
        you = _check_endpoint(self.you, "you")
        if you is not self.you:
            object.__setattr__(self, "you", you)
        peer = _check_endpoint(self.peer, "peer")
        if peer is not self.peer:
            object.__setattr__(self, "peer", peer)
        token = check_token(self.token)
        if token != self.token:
            object.__setattr__(self, "token", token)
        if self.peer_nat is not None:
            _check_peer_nat(self)


def _check_peer_nat(response: V2Response) -> None:
    if response.status is not Status.PAIRED:
        raise LocalProtocolError(
            f"a NAT hint goes only in a PAIRED response, not {response.status.name}",
            Reason.BAD_HINT,
        )
    if type(response.peer_nat) is not NatClass:
        try:
            nat = NatClass(response.peer_nat)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise LocalProtocolError(
                f"unknown NAT class {response.peer_nat!r}", Reason.BAD_HINT
            ) from exc
        object.__setattr__(response, "peer_nat", nat)


def encode_v2_response(response: V2Response) -> bytes:
    """The 51 bytes of a response (its fields were checked when it was built); byte 50 is
    zero unless the response carries the peer's NAT class (``peer_nat``)."""
    you, peer = response.you, response.peer
    return _RESPONSE.pack(
        response.status,
        _ipv4_packed(you.ip),
        you.port,
        _ipv4_packed(peer.ip),
        peer.port,
        response.token.encode("ascii"),  # struct pads the 37-byte field with zeros
        HINT_BYTE[response.peer_nat],
    )


def decode_v2_response(data: bytes) -> V2Response:
    if len(data) != V2_RESPONSE_SIZE:
        raise RemoteProtocolError(
            f"a v2 response is {V2_RESPONSE_SIZE} bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    try:
        status = Status(data[0])
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown v2 status {data[0]}", Reason.UNKNOWN_STATUS) from exc
    raw_token = _cstring(data[13:50], "reconnect token")
    return V2Response(
        status=status,
        you=unpack_ip_port(data[1:7]),
        peer=unpack_ip_port(data[7:13]),
        token=check_token(raw_token.decode("ascii", "replace"), RemoteProtocolError),
        peer_nat=decode_hint(data[50], status is Status.PAIRED),
    )

"""Protocol v2, the fork's fixed-size messages: 141-byte requests, 51-byte responses.

Responses carry 50 bytes of fields and one trailing zero: the clients in the field read
51 bytes per response, so the 51st byte is part of the wire format.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass

from tcpunch.endpoint import Endpoint, pack_ip_port, unpack_ip_port
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError

V2_NAME_FIELD = 100
V2_TOKEN_FIELD = 37
V2_FLAGS_FIELD = 4
V2_REQUEST_SIZE = V2_NAME_FIELD + V2_TOKEN_FIELD + V2_FLAGS_FIELD  # 141
V2_RESPONSE_SIZE = 51
NO_TOKEN = ""

_ZERO_ENDPOINT = Endpoint("0.0.0.0", 0)


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


def _check_token(token: str, error: type[ProtocolError] = LocalProtocolError) -> str:
    if token == NO_TOKEN:
        return token
    try:
        return str(uuid.UUID(token))
    except ValueError as exc:
        raise error(f"the reconnect token {token[:40]!r} is not a UUID", Reason.BAD_TOKEN) from exc


@dataclass(frozen=True)
class V2Request:
    """A decoded v2 request. ``token`` is ``NO_TOKEN`` for a fresh arrival."""

    name: str
    token: str = NO_TOKEN
    flags: int = 0


def encode_v2_request(name: str, token: str = NO_TOKEN, flags: int = 0) -> bytes:
    raw_name = name.encode("utf-8")
    if not raw_name:
        raise LocalProtocolError("a pairing name must not be empty", Reason.EMPTY_NAME)
    token = _check_token(token)
    return (
        _encode_cstring(raw_name, V2_NAME_FIELD, "pairing name")
        + _encode_cstring(token.encode("ascii"), V2_TOKEN_FIELD, "reconnect token")
        + struct.pack("!I", flags)
    )


def decode_v2_request(data: bytes) -> V2Request:
    """Parse exactly 141 bytes; every malformation raises ProtocolError saying which."""
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
        token = _check_token(raw_token.decode("ascii"), RemoteProtocolError)
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("the reconnect token is not ASCII", Reason.BAD_TOKEN) from exc
    (flags,) = struct.unpack("!I", data[V2_NAME_FIELD + V2_TOKEN_FIELD :])
    return V2Request(name=name, token=token, flags=flags)


@dataclass(frozen=True)
class V2Response:
    status: Status
    you: Endpoint = _ZERO_ENDPOINT
    peer: Endpoint = _ZERO_ENDPOINT
    token: str = NO_TOKEN


def encode_v2_response(response: V2Response) -> bytes:
    token = _check_token(response.token)
    return (
        bytes([int(response.status)])
        + pack_ip_port(*response.you)
        + pack_ip_port(*response.peer)
        + _encode_cstring(token.encode("ascii"), V2_TOKEN_FIELD, "reconnect token")
        + b"\0"
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
        token=_check_token(raw_token.decode("ascii", "replace"), RemoteProtocolError),
    )

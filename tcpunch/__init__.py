"""The TCPunch rendezvous wire protocols (v1 and v2), as pure code over bytes.

Nothing here touches a socket: the server (`rendezvous`) and the client (`fmi_client`)
feed bytes in and get bytes or events out, so every rule of the wire is testable with
byte vectors. Kept dependency-free because it ships in the client's Lambda layer.

- ``endpoint``, ``v1``, ``v2``: the message codecs (8-byte endpoints, v1 names, v2's
  141-byte requests and 51-byte responses).
- ``credential``, ``v2credential``: credentials for servers with an auth secret (TURN
  REST style, bound to a name prefix) and how a v2 request carries one: flag bit 0, then
  a length-prefixed trailer after the 141 bytes (``V2Request(..., credential=...)``).
- ``nathint``: NAT hints: flag bits 1-3 report the requester's NAT class and ask for the
  peer's, which the server puts in byte 50 of PAIRED (``0x10 | class``; zero: no hint).
- ``request.RequestReader``: the server's side: bytes of one connection in, one request
  out (``V1Request``, ``V2Request`` or a fork's ``Command``), v1 and v2 on one port.
- ``client.ClientExchange``: the client's side, across every connection a pairing
  takes: request bytes out; the server's bytes in, events out (``OwnEndpoint``,
  ``Waiting``, ``Paired``, ``TimedOut``, ``ServerError``, ``ServerClosed``); resume bytes
  out after a resumable end (v2 TIMEOUT or a lost connection: the token; v1: rejoin when
  the server ends a wait). Its transitions are the tables in ``client_state``.

Requests, responses and events are frozen, slotted and validated when built, so a bad
name, token or port cannot exist. Errors say whose fault the bytes were:
``LocalProtocolError`` (our own misuse) or ``RemoteProtocolError`` (the other side's
bytes), each with a stable ``.reason`` code (``errors.Reason``) to classify by.
"""

from tcpunch.client import ClientExchange
from tcpunch.client_events import (
    Event,
    OwnEndpoint,
    Paired,
    ServerClosed,
    ServerError,
    TimedOut,
    Waiting,
)
from tcpunch.client_state import ClientState
from tcpunch.endpoint import ENDPOINT_SIZE, Endpoint, pack_endpoint, unpack_endpoint
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from tcpunch.nathint import FLAG_READS_HINTS, NatClass, hint_flags
from tcpunch.request import Command, NeedMoreData, RequestReader, V1Request
from tcpunch.v1 import V1_CONTROL_BYTES, V1_MAX_NAME, encode_v1_name
from tcpunch.v2 import (
    NO_TOKEN,
    V2_NAME_FIELD,
    V2_REQUEST_SIZE,
    V2_RESPONSE_SIZE,
    V2_TOKEN_FIELD,
    Status,
    V2Request,
    V2Response,
    decode_v2_request,
    decode_v2_response,
    encode_v2_request,
    encode_v2_response,
)

__all__ = [
    "ENDPOINT_SIZE",
    "FLAG_READS_HINTS",
    "NO_TOKEN",
    "V1_CONTROL_BYTES",
    "V1_MAX_NAME",
    "V2_NAME_FIELD",
    "V2_REQUEST_SIZE",
    "V2_RESPONSE_SIZE",
    "V2_TOKEN_FIELD",
    "ClientExchange",
    "ClientState",
    "Command",
    "Endpoint",
    "Event",
    "LocalProtocolError",
    "NatClass",
    "NeedMoreData",
    "OwnEndpoint",
    "Paired",
    "ProtocolError",
    "Reason",
    "RemoteProtocolError",
    "RequestReader",
    "ServerClosed",
    "ServerError",
    "Status",
    "TimedOut",
    "V1Request",
    "V2Request",
    "V2Response",
    "Waiting",
    "decode_v2_request",
    "decode_v2_response",
    "encode_v1_name",
    "encode_v2_request",
    "encode_v2_response",
    "hint_flags",
    "pack_endpoint",
    "unpack_endpoint",
]

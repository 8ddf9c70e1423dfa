"""The TCPunch rendezvous wire protocols (v1 and v2), as pure code over bytes.

Nothing here touches a socket: the server (`rendezvous`) and the client (`fmi_client`)
feed bytes in and get bytes or events out, so every rule of the wire is testable with
byte vectors. Kept dependency-free because it ships in the client's Lambda layer.
"""

from tcpunch.endpoint import ENDPOINT_SIZE, Endpoint, pack_endpoint, unpack_endpoint
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from tcpunch.request import (
    Command,
    NeedMoreData,
    RequestReader,
    V1Request,
    V2Request,
)
from tcpunch.v1 import V1_CONTROL_BYTES, V1_MAX_NAME, encode_v1_name
from tcpunch.v2 import (
    NO_TOKEN,
    V2_NAME_FIELD,
    V2_REQUEST_SIZE,
    V2_RESPONSE_SIZE,
    V2_TOKEN_FIELD,
    Status,
    V2Response,
    decode_v2_request,
    decode_v2_response,
    encode_v2_request,
    encode_v2_response,
)

__all__ = [
    "ENDPOINT_SIZE",
    "NO_TOKEN",
    "V1_CONTROL_BYTES",
    "V1_MAX_NAME",
    "V2_NAME_FIELD",
    "V2_REQUEST_SIZE",
    "V2_RESPONSE_SIZE",
    "V2_TOKEN_FIELD",
    "Command",
    "Endpoint",
    "LocalProtocolError",
    "NeedMoreData",
    "ProtocolError",
    "Reason",
    "RemoteProtocolError",
    "RequestReader",
    "Status",
    "V1Request",
    "V2Request",
    "V2Response",
    "decode_v2_request",
    "decode_v2_response",
    "encode_v1_name",
    "encode_v2_request",
    "encode_v2_response",
    "pack_endpoint",
    "unpack_endpoint",
]

"""The exceptions the codecs raise, split by whose fault the bytes were (as h11 does).

``LocalProtocolError``: we were asked to build something the wire cannot carry (our own
misuse: an empty or over-long name, a bad token). ``RemoteProtocolError``: the other side
sent bytes that do not form a valid message. Both carry a ``reason``, a short stable code
that callers classify by (metrics labels, refusal reasons); the text is for people only.
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why bytes were refused: stable codes, used as metric labels by the server."""

    EMPTY_NAME = "empty_name"
    NAME_TOO_LONG = "name_too_long"
    NUL_IN_NAME = "nul_in_name"
    NOT_UTF8 = "not_utf8"
    BAD_TOKEN = "bad_token"
    NOT_TERMINATED = "not_terminated"
    OVERSIZED = "oversized"
    WRONG_SIZE = "wrong_size"
    TRAILING_BYTES = "trailing_bytes"
    UNKNOWN_STATUS = "unknown_status"
    BAD_COMMAND = "bad_command"
    BAD_ENDPOINT = "bad_endpoint"
    UNEXPECTED = "unexpected"
    CLOSED = "closed"
    # The far end answered HTTP (the server's HTTP port, not its rendezvous port).
    HTTP_REPLY = "http_reply"
    # v2 flags outside 0..2**32-1.
    BAD_FLAGS = "bad_flags"
    # Byte 50 of a v2 response is neither 0 (no NAT hint) nor a NAT hint of a PAIRED one.
    BAD_HINT = "bad_hint"
    # A field of the wrong Python type (str where bytes belong, ...).
    WRONG_TYPE = "wrong_type"
    # A step the client exchange's state does not allow (our own misuse).
    OUT_OF_ORDER = "out_of_order"


class ProtocolError(ValueError):
    """Bytes that do not form a valid message; ``reason`` says which rule, the text how."""

    def __init__(self, message: str, reason: Reason = Reason.UNEXPECTED) -> None:
        super().__init__(message)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something the protocol cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The other side sent bytes that break the protocol."""

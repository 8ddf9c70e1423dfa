"""Protocol v1, the original TCPunch: the pairing name as raw bytes, 8-byte replies.

The original server reads the name with a single ``recv()`` of at most 100 bytes, so a
name is whatever arrived in the first segment; it never contains a NUL byte.
"""

from __future__ import annotations

import re

from tcpunch.errors import LocalProtocolError, Reason

V1_MAX_NAME = 100

V1_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")
"""Control bytes (C0 and DEL): a v1 "name" holding them is junk (a probe, a stray
protocol), which our server refuses; clients check names against the same rule."""


def check_v1_name(raw: bytes) -> bytes:
    """``raw`` if it is a name a v1 client can send: 1..100 bytes, no NUL."""
    if type(raw) is not bytes:
        raise LocalProtocolError(
            f"a v1 pairing name is bytes, not {type(raw).__name__}", Reason.WRONG_TYPE
        )
    if not raw:
        raise LocalProtocolError("a pairing name must not be empty", Reason.EMPTY_NAME)
    if len(raw) > V1_MAX_NAME:
        raise LocalProtocolError(
            f"a v1 pairing name is at most {V1_MAX_NAME} bytes, got {len(raw)}",
            Reason.NAME_TOO_LONG,
        )
    if b"\0" in raw:
        raise LocalProtocolError(
            "a v1 pairing name must not contain a NUL byte", Reason.NUL_IN_NAME
        )
    return raw


def encode_v1_name(name: str | bytes) -> bytes:
    """The bytes a v1 client sends; refuses what the original server could not read."""
    if isinstance(name, str):
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(
                f"the pairing name {name[:40]!r} cannot be encoded as UTF-8", Reason.NOT_UTF8
            ) from exc
    else:
        raw = bytes(name)
    return check_v1_name(raw)

"""Reading one rendezvous request from a byte stream, v1 and v2 on the same port.

A v2 request is 141 bytes with a NUL inside its first 100 bytes; a v1 name never
contains a NUL. So the first bytes decide: a NUL within the first 100 means v2 (wait for
all 141), none means v1, and the v1 name is what arrived in the first read, exactly as
the original server's single ``recv()`` took it. A v2 request whose flag bit 0 is set
is followed by a credential trailer (``tcpunch.v2credential``), read as part of it;
every request with the bit clear (all the fork's clients send) reads as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tcpunch.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from tcpunch.v1 import V1_MAX_NAME, check_v1_name
from tcpunch.v2 import V2_NAME_FIELD, V2_REQUEST_SIZE, V2Request, decode_v2_request
from tcpunch.v2credential import FLAG_CREDENTIAL, split_request

DELETE_PAIRS = b"delete_pairs"
# The flags are 4 bytes in network order at 137..140: bit 0 is in the last one.
_FLAGS_LOW_BYTE = V2_REQUEST_SIZE - 1
REMOVE_PAIR_PREFIX = b"remove_pair_"


class _NeedMoreData:
    """More bytes are needed before the request is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NeedMoreData"


NeedMoreData = _NeedMoreData()


@dataclass(frozen=True, slots=True)
class V1Request:
    """A v1 pairing request. The name is raw bytes: v1 never promised an encoding.

    Validated at construction (1..100 bytes, no NUL; LocalProtocolError otherwise).
    """

    name: bytes

    def __post_init__(self) -> None:
        check_v1_name(self.name)


_new_v1_request = object.__new__
# The slot's descriptor: setting through it skips the frozen dataclass's __setattr__.
_set_v1_name: Callable[[V1Request, bytes], None] = V1Request.__dict__["name"].__set__


def _reader_v1_request(name: bytes) -> V1Request:
    """A V1Request from bytes RequestReader has already checked, without re-checking.

    The server builds one per v1 pairing and its CPU per pairing is a measured budget
    (BENCHMARKS.md): the dataclass ``__init__`` plus ``__post_init__`` cost several
    times this. Only for RequestReader, whose framing guarantees the invariants: the
    buffer is non-empty, at most 100 bytes, and holds no NUL (a NUL within the first
    100 bytes makes it v2).
    """
    request: V1Request = _new_v1_request(V1Request)
    _set_v1_name(request, name)
    return request


@dataclass(frozen=True, slots=True)
class Command:
    """An administrative command that forks of TCPunch added on the v1 port.

    ``kind`` is ``"delete_pairs"`` (clear every waiting entry) or ``"remove_pair"``
    (remove the waiting entry named ``name``). Validated at construction: an unknown
    kind, a name on ``delete_pairs``, or a ``remove_pair`` without a name or whose
    ``remove_pair_<name>`` breaks the v1 name rules raises LocalProtocolError.
    """

    kind: Literal["delete_pairs", "remove_pair"]
    name: bytes = b""

    def __post_init__(self) -> None:
        if self.kind == "delete_pairs":
            if self.name != b"":
                raise LocalProtocolError("delete_pairs takes no name", Reason.BAD_COMMAND)
        elif self.kind == "remove_pair":
            if self.name == b"":
                raise LocalProtocolError(
                    "remove_pair needs the pairing name to remove", Reason.BAD_COMMAND
                )
            check_v1_name(self.name)
            check_v1_name(REMOVE_PAIR_PREFIX + self.name)
        else:
            raise LocalProtocolError(
                f"unknown command kind {self.kind!r} (delete_pairs or remove_pair)",
                Reason.BAD_COMMAND,
            )


Request = V1Request | V2Request | Command


def name_text(name: bytes) -> str:
    """A pairing name for logs and errors: UTF-8 where it is, escapes where not."""
    return name.decode("utf-8", "backslashreplace")


def _classify_v1(name: bytes) -> V1Request | Command:
    """Tell the fork commands from ordinary v1 pairing names (``name``: as the reader framed it)."""
    if name == DELETE_PAIRS:
        return Command("delete_pairs")
    if name.startswith(REMOVE_PAIR_PREFIX):
        target = name[len(REMOVE_PAIR_PREFIX) :]
        if not target:
            raise RemoteProtocolError(
                "remove_pair_ needs a pairing name after the prefix", Reason.BAD_COMMAND
            )
        return Command("remove_pair", target)
    return _reader_v1_request(name)


class RequestReader:
    """Feed it the bytes of one connection; it returns the request once complete.

    ``feed`` returns ``NeedMoreData`` until a request is complete, then the request. It
    raises ProtocolError for input no client sends (a v1 name over 100 bytes, a malformed
    v2 request, bytes after the request). ``eof`` says what an end of stream means.
    """

    __slots__ = ("_buffer", "_done")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> Request | _NeedMoreData:
        if self._done:
            raise RemoteProtocolError(
                f"{len(data)} unexpected bytes after the request", Reason.TRAILING_BYTES
            )
        self._buffer += data
        buffer = self._buffer
        if not buffer:
            return NeedMoreData
        if b"\0" in buffer[:V2_NAME_FIELD]:
            if len(buffer) < V2_REQUEST_SIZE:
                return NeedMoreData
            if buffer[_FLAGS_LOW_BYTE] & FLAG_CREDENTIAL:
                split = split_request(buffer)  # raises for a bad or oversized trailer
                if split is None:
                    return NeedMoreData
                self._done = True
                return decode_v2_request(*split)
            if len(buffer) > V2_REQUEST_SIZE:
                raise RemoteProtocolError(
                    f"a v2 request is {V2_REQUEST_SIZE} bytes, got {len(buffer)} or more",
                    Reason.OVERSIZED,
                )
            self._done = True
            return decode_v2_request(bytes(buffer))
        if len(buffer) > V1_MAX_NAME:
            raise RemoteProtocolError(
                f"a v1 pairing name is at most {V1_MAX_NAME} bytes and has no NUL; "
                f"got {len(buffer)} bytes",
                Reason.OVERSIZED,
            )
        self._done = True
        return _classify_v1(bytes(buffer))

    def eof(self) -> ProtocolError:
        """The error an end of stream before a complete request amounts to."""
        if not self._buffer:
            return RemoteProtocolError(
                "the connection closed without sending a request", Reason.CLOSED
            )
        return RemoteProtocolError(
            f"the connection closed after {len(self._buffer)} bytes of an incomplete request",
            Reason.CLOSED,
        )

"""Mutual authentication of a new peer link by the job secret: sans-IO, bytes in, bytes out.

Both sides prove they hold the job secret, bound to this link: an HMAC-SHA256 (key
from HKDF-SHA256 of the secret) over a transcript of the pairing name, both ranks,
a fresh 32-byte nonce from each side and the channel binding (for TLS the hash of the
TLS server's certificate, RFC 5929 ``tls-server-end-point``). The messages are
symmetric, so a simultaneous-open link needs no client/server roles here (TLS needs
them: ``securelink.tls_role`` makes the lower rank the TLS server)::

    each side: HELLO  version:u8=1 type:u8=1 sender_rank:u32 nonce:32   (38 bytes)
    each side: PROOF  version:u8=1 type:u8=2 mac:32                      (34 bytes)
    mac = HMAC(K, "proof" | sender_rank:u32 | transcript)

A side sends its HELLO at once, its PROOF after the peer's HELLO, and the link is
authenticated when the peer's PROOF checks out (constant-time). A recorded handshake
replayed later fails: the victim's fresh nonce is in the transcript. A proof cannot be
reflected: it names its sender's rank. No key or secret is ever in a repr or error.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

VERSION = 1
NONCE_SIZE = 32
MIN_SECRET_BYTES = 16
SECRET_ENV = "FMI_SECRET"
_HELLO = struct.Struct("!BBI32s")
_PROOF = struct.Struct("!BB32s")
HELLO_SIZE = _HELLO.size  # 38
PROOF_SIZE = _PROOF.size  # 34
MAX_MESSAGE_SIZE = max(HELLO_SIZE, PROOF_SIZE)
_MAX_RANK = 2**32 - 1
_TLS_RECORD_FIRST_BYTE = 0x16  # a TLS handshake record: the peer wants TLS, we do not
PLAIN_BINDING = b"plain"


class MessageType(enum.IntEnum):
    HELLO = 1
    PROOF = 2


_SIZES = {MessageType.HELLO: HELLO_SIZE, MessageType.PROOF: PROOF_SIZE}


class Failure(str, enum.Enum):
    """Why a link was not authenticated; stable codes for logs and metrics."""

    BAD_VERSION = "bad_version"
    UNEXPECTED_MESSAGE = "unexpected_message"
    WRONG_RANK = "wrong_rank"
    REFLECTED = "reflected"
    BAD_PROOF = "bad_proof"
    PEER_CLOSED = "peer_closed"
    TLS_FAILED = "tls_failed"
    TIMEOUT = "timeout"


class HandshakeError(ValueError):
    """The peer did not authenticate; ``reason`` says which rule. Never holds the secret."""

    def __init__(self, message: str, reason: Failure) -> None:
        super().__init__(message)
        self.reason = reason


class State(enum.Enum):
    START = "start"
    HELLO_SENT = "hello_sent"
    PROOF_SENT = "proof_sent"
    DONE = "done"
    FAILED = "failed"


class Event(enum.Enum):
    """What moves the state machine: our start, or a complete message from the peer."""

    START = "start"
    HELLO = "hello"
    PROOF = "proof"


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with HMAC-SHA256 (extract, then expand)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


class LinkSecret:
    """The job secret, held only as the derived proof key; its repr shows nothing."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_SECRET_BYTES:
            raise ValueError(
                f"a job secret is at least {MIN_SECRET_BYTES} bytes (got {len(raw)}); make one "
                'with python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        self._key = _hkdf_sha256(raw, salt=b"fmi-client link-auth v1", info=b"proof key")

    def __repr__(self) -> str:
        return "LinkSecret(<hidden>)"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a LinkSecret is not pickled (it would carry the key)")

    def mac(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> LinkSecret | None:
        """The secret in $FMI_SECRET, or None when it is unset or empty."""
        value = environ.get(SECRET_ENV, "")
        return cls(value) if value else None


def tls_server_end_point(server_certificate_der: bytes) -> bytes:
    """The channel binding of a TLS link: a hash of its server's certificate (RFC 5929)."""
    return b"tls-server-end-point:" + hashlib.sha256(server_certificate_der).digest()


def transcript(
    pairing: str, ranks: tuple[int, int], nonces: tuple[bytes, bytes], binding: bytes
) -> bytes:
    """What both proofs cover; ranks and nonces in (lower rank, higher rank) order."""
    name = pairing.encode("utf-8", "surrogatepass")
    return (
        b"fmi-client/link-auth"
        + struct.pack("!BH", VERSION, len(name))
        + name
        + struct.pack("!II", *ranks)
        + nonces[0]
        + nonces[1]
        + struct.pack("!H", len(binding))
        + binding
    )


class Handshake:
    """One side of the handshake. Feed the peer's bytes to ``receive_data``; send what
    ``start`` and ``receive_data`` return. ``state`` is DONE once the peer is proven.

    ``binding`` must be the same on both sides (``tls_server_end_point`` of the link's
    TLS server certificate, or ``PLAIN_BINDING``); a relay that splices two TLS sessions
    gives the two sides different bindings, so their proofs do not match.
    """

    __slots__ = (
        "_binding",
        "_buffer",
        "_nonce",
        "_peer_nonce",
        "_secret",
        "_transcript",
        "my_rank",
        "pairing",
        "peer_rank",
        "state",
    )

    def __init__(
        self,
        secret: LinkSecret,
        pairing: str,
        my_rank: int,
        peer_rank: int,
        binding: bytes,
        nonce: bytes | None = None,
    ) -> None:
        for rank in (my_rank, peer_rank):
            if not 0 <= rank <= _MAX_RANK:
                raise ValueError(f"a rank is between 0 and {_MAX_RANK}, got {rank}")
        if my_rank == peer_rank:
            raise ValueError(f"a link joins two different ranks, got {my_rank} twice")
        if len(pairing.encode("utf-8", "surrogatepass")) > 0xFFFF or len(binding) > 0xFFFF:
            raise ValueError("the pairing name and the binding are at most 65535 bytes each")
        if nonce is not None and len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        self._secret = secret
        self.pairing, self.my_rank, self.peer_rank = pairing, my_rank, peer_rank
        self._binding = binding
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_SIZE)
        self._peer_nonce = b""
        self._transcript = b""
        self._buffer = bytearray()
        self.state = State.START

    def __repr__(self) -> str:
        return (
            f"Handshake(pairing={self.pairing!r}, my_rank={self.my_rank}, "
            f"peer_rank={self.peer_rank}, state={self.state.value})"
        )

    # -- the transitions ---------------------------------------------------------------

    def start(self) -> bytes:
        """Our HELLO, to send at once (both sides do, in any order)."""
        return self._step(_START, b"")

    def next_size(self) -> int:
        """How many more bytes complete the next message we expect (exact reads, no overread)."""
        expected = _EXPECTED.get(self.state)
        if expected is None:
            return 0
        return max(_SIZES[expected] - len(self._buffer), 0)

    def receive_data(self, data: bytes) -> bytes:
        """Take the peer's bytes; returns what to send. Raises HandshakeError on failure.

        Bytes after the peer's PROOF are not ours: they stay in ``trailing``.
        """
        self._buffer += data
        out = b""
        while self.state in _EXPECTED and len(self._buffer) >= 2:
            version, kind = self._buffer[0], self._buffer[1]
            if version != VERSION:
                self._fail(_version_message(version, self.pairing), Failure.BAD_VERSION)
            event = _EVENTS.get(kind)
            if event is None or (self.state, event) not in _TRANSITIONS:
                self._fail(
                    f"unexpected handshake message type {kind} in state {self.state.value} "
                    f"on pairing {self.pairing!r}",
                    Failure.UNEXPECTED_MESSAGE,
                )
            size = _SIZES[MessageType(kind)]
            if len(self._buffer) < size:
                break
            message = bytes(self._buffer[:size])
            del self._buffer[:size]
            out += self._step(event, message)
        return out

    @property
    def trailing(self) -> bytes:
        """Bytes received after the handshake completed (the peer's first user bytes)."""
        return bytes(self._buffer) if self.state is State.DONE else b""

    def eof(self) -> HandshakeError:
        """The error the peer closing the connection now amounts to."""
        return HandshakeError(
            f"the peer closed the link on pairing {self.pairing!r} during the handshake "
            f"({self.state.value}): it may not hold the job secret",
            Failure.PEER_CLOSED,
        )

    def _step(self, event: Event, message: bytes) -> bytes:
        transition = _TRANSITIONS.get((self.state, event))
        if transition is None:
            self._fail(
                f"handshake event {event.value} is not allowed in state {self.state.value}",
                Failure.UNEXPECTED_MESSAGE,
            )
        action, after = transition
        out = action(self, message)
        self.state = after
        return out

    def _fail(self, message: str, reason: Failure) -> NoReturn:
        self.state = State.FAILED
        raise HandshakeError(message, reason)

    def _send_hello(self, _message: bytes) -> bytes:
        return _HELLO.pack(VERSION, MessageType.HELLO, self.my_rank, self._nonce)

    def _on_hello(self, message: bytes) -> bytes:
        _, _, sender, nonce = _HELLO.unpack(message)
        if sender != self.peer_rank:
            self._fail(
                f"on pairing {self.pairing!r} rank {self.my_rank} expected rank "
                f"{self.peer_rank}, but the peer says it is rank {sender}",
                Failure.WRONG_RANK,
            )
        if hmac.compare_digest(nonce, self._nonce):
            self._fail(
                f"the peer on pairing {self.pairing!r} echoed our own nonce",
                Failure.REFLECTED,
            )
        self._peer_nonce = nonce
        low_first = self.my_rank < self.peer_rank
        ranks = (self.my_rank, self.peer_rank) if low_first else (self.peer_rank, self.my_rank)
        nonces = (self._nonce, nonce) if low_first else (nonce, self._nonce)
        self._transcript = transcript(self.pairing, ranks, nonces, self._binding)
        return _PROOF.pack(VERSION, MessageType.PROOF, self._proof(self.my_rank))

    def _on_proof(self, message: bytes) -> bytes:
        _, _, mac = _PROOF.unpack(message)
        if not hmac.compare_digest(mac, self._proof(self.peer_rank)):
            self._fail(
                f"the peer on pairing {self.pairing!r} (rank {self.peer_rank}) failed to "
                "prove the job secret: a different secret, a stranger, a replay, or a relay "
                "between two TLS sessions",
                Failure.BAD_PROOF,
            )
        return b""

    def _proof(self, sender: int) -> bytes:
        return self._secret.mac(b"proof" + struct.pack("!I", sender) + self._transcript)


def _version_message(version: int, pairing: str) -> str:
    if version == _TLS_RECORD_FIRST_BYTE:
        return (
            f"the peer on pairing {pairing!r} started TLS but this side has encrypt=False: "
            "both sides must agree on encryption"
        )
    return f"the peer on pairing {pairing!r} speaks handshake version {version}, we speak {VERSION}"


_START = Event.START
_EVENTS = {int(MessageType.HELLO): Event.HELLO, int(MessageType.PROOF): Event.PROOF}
#: The message each waiting state expects next.
_EXPECTED = {State.HELLO_SENT: MessageType.HELLO, State.PROOF_SENT: MessageType.PROOF}
_Action = Callable[[Handshake, bytes], bytes]
#: (state, event) -> (action, next state). Anything not listed fails the handshake.
_TRANSITIONS: dict[tuple[State, Event], tuple[_Action, State]] = {
    (State.START, Event.START): (Handshake._send_hello, State.HELLO_SENT),
    (State.HELLO_SENT, Event.HELLO): (Handshake._on_hello, State.PROOF_SENT),
    (State.PROOF_SENT, Event.PROOF): (Handshake._on_proof, State.DONE),
}

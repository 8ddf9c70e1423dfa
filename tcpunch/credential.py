"""Time-limited rendezvous credentials bound to a name prefix, as pure functions over bytes.

The scheme is coturn's "TURN REST API" (draft-uberti-behave-turn-rest) with SHA-256 in
place of its SHA-1: ``username = "<expiry-unix>:<prefix>"`` and
``password = base64(HMAC-SHA256(secret, username))``. A server that holds the secret
checks a credential without keeping any state, and a credential for one job's prefix
cannot register another job's names. It travels as one string,
``"<expiry>:<prefix>:<password>"`` (the password is base64 and has no ``:``, so the
last ``:`` splits it off; a prefix may contain ``:``).

Stdlib only: the server, the client and the pipeline's Initialize step all import it.
The secret appears in no repr, error or return value here.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from dataclasses import dataclass

#: Where clients (fmi_client, the FMI compat layer) find their credential when not given one.
CREDENTIAL_ENV = "RENDEZVOUS_CREDENTIAL"
#: A server secret shorter than this is refused: credentials are only as strong as it.
MIN_SECRET_BYTES = 16
#: A prefix fits a v2 name field (99 bytes), the longest name it can cover.
MAX_PREFIX_BYTES = 99
#: The longest credential string: expiry (<= 20 digits), prefix, base64 of 32 bytes.
MAX_CREDENTIAL_BYTES = 20 + 1 + MAX_PREFIX_BYTES + 1 + 44
_PASSWORD_CHARS = 44  # base64 of a 32-byte HMAC-SHA256, with one "=" of padding


class Verdict(str, enum.Enum):
    """What checking a credential found; the values are stable metric/log labels."""

    OK = "ok"
    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"
    WRONG_PREFIX = "wrong_prefix"


@dataclass(frozen=True)
class Credential:
    """A parsed credential. It holds no secret: the password is an HMAC of public data."""

    expiry: int
    prefix: str
    password: str

    @property
    def username(self) -> str:
        return f"{self.expiry}:{self.prefix}"

    def __str__(self) -> str:
        return f"{self.username}:{self.password}"


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes):
        raise TypeError("the auth secret must be bytes")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the auth secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} random "
            'bytes, e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


def _check_prefix(prefix: str) -> bytes:
    raw = prefix.encode("utf-8")
    if not raw:
        raise ValueError("a credential prefix must not be empty (it would cover every name)")
    if len(raw) > MAX_PREFIX_BYTES:
        raise ValueError(f"a credential prefix is at most {MAX_PREFIX_BYTES} bytes, got {len(raw)}")
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise ValueError("a credential prefix must not contain control characters or NUL")
    return raw


def password_for(secret: bytes, username: str) -> str:
    """base64(HMAC-SHA256(secret, username)): the TURN REST password of ``username``."""
    _check_secret(secret)
    digest = hmac.new(secret, username.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


MAX_TTL = 7 * 24 * 3600
"""The longest a credential may live (7 days): one job's, not a standing key; a bounded
expiry also keeps the string within what :func:`parse` reads."""


def mint(secret: bytes, prefix: str, ttl: int, now: float) -> str:
    """A credential string valid for ``ttl`` seconds from ``now`` for names under ``prefix``.

    Pick prefixes that end with a separator (``"run-4f2a/"``): a credential for ``job1``
    also covers ``job10``, as FMI's names have no separator after the comm_name.
    """
    _check_prefix(prefix)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"a credential's ttl is a positive number of seconds, got {ttl!r}")
    if ttl > MAX_TTL:
        raise ValueError(
            f"a credential's ttl (--ttl) is at most {MAX_TTL} seconds (7 days), got {ttl}: "
            "mint a fresh credential per job instead of a long-lived one"
        )
    expiry = int(now) + ttl
    username = f"{expiry}:{prefix}"
    return f"{username}:{password_for(secret, username)}"


def parse(credential: str) -> Credential:
    """Split a credential string into its fields; ValueError (no secret involved) if malformed."""
    if len(credential.encode("utf-8", "surrogatepass")) > MAX_CREDENTIAL_BYTES:
        raise ValueError(f"a credential is at most {MAX_CREDENTIAL_BYTES} bytes")
    expiry_text, sep1, rest = credential.partition(":")
    prefix, sep2, password = rest.rpartition(":")
    if not (sep1 and sep2):
        raise ValueError("a credential reads '<expiry>:<prefix>:<password>'")
    if not (expiry_text.isascii() and expiry_text.isdigit()) or len(expiry_text) > 20:
        raise ValueError("a credential's expiry is a Unix time in decimal digits")
    try:
        _check_prefix(prefix)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"a credential's prefix is invalid: {exc}") from None
    if len(password) != _PASSWORD_CHARS or not password.isascii():
        raise ValueError("a credential's password is 44 characters of base64")
    try:
        base64.b64decode(password, validate=True)
    except binascii.Error:
        raise ValueError("a credential's password is not base64") from None
    return Credential(int(expiry_text), prefix, password)


def verify(secret: bytes, credential: str, name: str | bytes, now: float) -> Verdict:
    """Whether ``credential`` lets its holder register ``name`` at time ``now``.

    The HMAC is checked first, in constant time, so nothing else about a forged credential
    is looked at. ``name`` is a v2 name (str) or a v1 name (raw bytes).
    """
    _check_secret(secret)
    try:
        parsed = parse(credential)
    except ValueError:
        return Verdict.MALFORMED
    expected = password_for(secret, parsed.username)
    if not hmac.compare_digest(expected.encode("ascii"), parsed.password.encode("ascii")):
        return Verdict.FORGED
    if now >= parsed.expiry:
        return Verdict.EXPIRED
    raw_name = name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")
    if not raw_name.startswith(parsed.prefix.encode("utf-8")):
        return Verdict.WRONG_PREFIX
    return Verdict.OK

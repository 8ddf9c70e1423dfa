"""The server's side of credentials: where the auth secret comes from, who may register.

``rendezvous serve --auth-secret-file PATH`` (or ``RENDEZVOUS_AUTH_SECRET``) turns auth
on. Then a v2 request must carry a valid credential for its name (tcpunch.credential,
tcpunch.v2credential), and a v1 name (which cannot carry one) is refused unless it
matches the operator's ``--allow-v1`` pattern. Stdlib only; the secret stays inside
``AuthPolicy`` and appears in no repr, log line or error.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tcpunch.credential import CREDENTIAL_ENV, MIN_SECRET_BYTES, Verdict, mint, verify

SECRET_ENV = "RENDEZVOUS_AUTH_SECRET"
__all__ = [
    "CREDENTIAL_ENV",
    "SECRET_ENV",
    "AuthPolicy",
    "credential_command",
    "load_secret",
    "load_secrets",
]
#: Refusal reasons beyond tcpunch.credential.Verdict, for rejected_total{reason=...}.
NO_CREDENTIAL = "no_credential"
V1_NOT_ALLOWED = "v1_not_allowed"
#: Every reason an AuthPolicy refuses for (metrics.REFUSAL_REASONS lists them too).
REFUSAL_REASONS = (
    NO_CREDENTIAL,
    V1_NOT_ALLOWED,
    *(verdict.value for verdict in Verdict if verdict is not Verdict.OK),
)


class AuthSecretError(ValueError):
    """The auth secret could not be read or is too weak; the text says where and why."""


def load_secrets(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[bytes, ...] | None:
    """The auth secrets from ``path`` (first) or $RENDEZVOUS_AUTH_SECRET; None: auth off.

    One secret per line, whitespace stripped (a trailing newline is how editors and
    ``aws secretsmanager get-secret-value`` leave it). The first line is the current
    secret (it mints); later lines are previous secrets still accepted while their
    credentials expire, which is how a secret is rotated without refusing running jobs.
    """
    if path is not None:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise AuthSecretError(
                f"cannot read the auth secret file {os.fspath(path)!r}: {exc.strerror}"
            ) from None
        where = f"the file {os.fspath(path)!r}"
    elif environ.get(SECRET_ENV, "").strip():
        text = environ[SECRET_ENV].encode("utf-8")
        where = f"${SECRET_ENV}"
    else:
        return None
    secrets = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not secrets:
        raise AuthSecretError(f"{where} holds no auth secret")
    for number, raw in enumerate(secrets, 1):
        if len(raw) < MIN_SECRET_BYTES:
            raise AuthSecretError(
                f"the auth secret on line {number} of {where} is {len(raw)} bytes; use at least "
                f"{MIN_SECRET_BYTES} random bytes, e.g. "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
    return secrets


def load_secret(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> bytes | None:
    """The current auth secret (the one that mints), or None when auth is off."""
    secrets = load_secrets(path, environ)
    return secrets[0] if secrets else None


def credential_command(
    prefix: str,
    ttl: int,
    secret_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    now: Callable[[], float] = time.time,
) -> str:
    """What ``rendezvous credential --prefix P --ttl S [--auth-secret-file F]`` prints.

    Also the Python entry point for the pipeline's Initialize step. Raises AuthSecretError
    when no secret is configured (there is nothing to mint from) and ValueError for a
    bad prefix or ttl.
    """
    secret = load_secret(secret_file, os.environ if environ is None else environ)
    if secret is None:
        raise AuthSecretError(
            f"no auth secret: pass --auth-secret-file PATH or set ${SECRET_ENV} "
            "(the same secret the server was started with)"
        )
    return mint(secret, prefix, ttl, now())


@dataclass(frozen=True)
class Decision:
    """Whether to admit a request; ``reason`` is a rejected_total label when refused."""

    allowed: bool
    reason: str = ""


ADMIT = Decision(True)


@dataclass(frozen=True)
class AuthPolicy:
    """Who may register names on a server started with auth secrets (current first)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    allow_v1: re.Pattern[str] | None = None

    def __repr__(self) -> str:
        pattern = self.allow_v1.pattern if self.allow_v1 is not None else None
        return f"AuthPolicy(secrets=<{len(self.secrets)} hidden>, allow_v1={pattern!r})"

    @classmethod
    def create(cls, secrets: bytes | Sequence[bytes], allow_v1: str | None = None) -> AuthPolicy:
        """A policy; ``allow_v1`` is a regular expression a whole v1 name must match."""
        held = (secrets,) if isinstance(secrets, bytes) else tuple(secrets)
        if not held or any(len(secret) < MIN_SECRET_BYTES for secret in held):
            raise AuthSecretError(f"an auth secret must be at least {MIN_SECRET_BYTES} bytes")
        try:
            pattern = re.compile(allow_v1) if allow_v1 is not None else None
        except re.error as exc:
            raise ValueError(
                f"--allow-v1 {allow_v1!r} is not a regular expression: {exc}"
            ) from None
        return cls(held, pattern)

    def check_v2(self, name: str | bytes, credential: str | None, now: float) -> Decision:
        """A v2 request for ``name`` with the credential of its trailer (None: no trailer).

        A credential minted with any held secret counts; a refusal reports the verdict
        under the current secret.
        """
        if credential is None:
            return Decision(False, NO_CREDENTIAL)
        verdicts = [verify(secret, credential, name, now) for secret in self.secrets]
        if Verdict.OK in verdicts:
            return ADMIT
        forged = Verdict.FORGED
        reason = next((v for v in verdicts if v is not forged), verdicts[0])
        return Decision(False, reason.value)

    def check_relay(self, name: bytes, credential: bytes, now: float) -> Decision:
        """A relay request (raw name, the credential bytes of its extension; b"": none),
        judged as a v2 request: the relay's ``credential_check`` hook is
        ``lambda r: policy.check_relay(r.name, r.credential, time.time()).allowed``."""
        if not credential:
            return Decision(False, NO_CREDENTIAL)
        try:
            text = credential.decode("utf-8")
        except UnicodeDecodeError:
            return Decision(False, Verdict.MALFORMED.value)
        return self.check_v2(name, text, now)

    def check_v1(self, name: bytes) -> Decision:
        """A v1 name: admitted only if it wholly matches the operator's pattern."""
        if self.allow_v1 is None:
            return Decision(False, V1_NOT_ALLOWED)
        text = name.decode("utf-8", "backslashreplace")
        return ADMIT if self.allow_v1.fullmatch(text) else Decision(False, V1_NOT_ALLOWED)

    def check_command(self, kind: str, target: bytes = b"") -> Decision:
        """The forks' v1 commands: ``delete_pairs`` never; ``remove_pair_<name>`` as v1 names."""
        if kind == "remove_pair" and target:
            return self.check_v1(target)
        return Decision(False, V1_NOT_ALLOWED)

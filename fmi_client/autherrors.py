"""The errors of securing a peer link (authentication, encryption), beside fmi_client.errors."""

from __future__ import annotations

from fmi_client.errors import FmiClientError


class PeerAuthenticationFailed(FmiClientError):
    """The peer of a pairing did not prove the job secret (or the secure link broke first).

    ``name`` is the pairing, ``reason`` a ``fmi_client.handshake.Failure`` code; the text
    names the pairing and both ranks, never the secret.
    """

    def __init__(self, message: str, *, name: str, reason: str, rank: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason
        self.rank = rank


class EncryptionUnavailable(FmiClientError):
    """Encryption was asked for but the optional ``cryptography`` package is missing."""

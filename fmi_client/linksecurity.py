"""A Communicator's link security: the job secret, encryption, pickle and size limits.

With a job secret (``secret=`` or ``$FMI_SECRET``) every link is secured by
``fmi_client.securelink.pair_securely`` before the Channel exists, so no user byte is
sent or decoded before the peer proved the secret: TLS 1.3 with ephemeral keys unless
``encrypt=False``, a stranger dropped and the pairing retried until the deadline.
Without a secret links are as before (unauthenticated, in clear), and only plain data
is decoded from them unless ``allow_pickle=True``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from fmi_client.address import check_int
from fmi_client.autherrors import PeerAuthenticationFailed
from fmi_client.channel import Channel
from fmi_client.handshake import LinkSecret
from fmi_client.safecodec import DEFAULT_MAX_MESSAGE_BYTES
from fmi_client.securelink import pair_securely, require_encryption

log = logging.getLogger("fmi_client")
#: The least max_message_bytes accepted (a frame of plain data must fit).
MIN_MESSAGE_BYTES = 1024


class LinkSecurity:
    """How one communicator secures and decodes its links; repr and pickling show no secret."""

    __slots__ = ("allow_pickle", "encrypt", "max_message_bytes", "secret")

    def __init__(
        self,
        secret: LinkSecret | str | bytes | None = None,
        *,
        encrypt: bool = True,
        allow_pickle: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if secret is None:
            self.secret = LinkSecret.from_environ(environ)
        else:
            self.secret = secret if isinstance(secret, LinkSecret) else LinkSecret(secret)
        self.encrypt = bool(encrypt)
        self.allow_pickle = bool(allow_pickle)
        self.max_message_bytes = check_int(max_message_bytes, "max_message_bytes")
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes must be at least {MIN_MESSAGE_BYTES}, "
                f"got {self.max_message_bytes}"
            )
        if self.secret is not None and self.encrypt:
            require_encryption()  # EncryptionUnavailable now, not at the first pairing

    @property
    def authenticated(self) -> bool:
        """Whether every link proves the job secret before use."""
        return self.secret is not None

    @property
    def pickle_allowed(self) -> bool:
        return self.authenticated or self.allow_pickle

    def pair(
        self,
        connect: Callable[[float], socket.socket],
        timeout: float,
        *,
        pairing: str,
        my_rank: int,
        peer_rank: int,
    ) -> socket.socket:
        """A connected socket to ``peer_rank`` through ``connect(seconds_left)`` within
        ``timeout``: secured (authenticated, and encrypted if asked) with a secret."""
        if self.secret is None:
            return connect(timeout)
        return pair_securely(
            connect,
            secret=self.secret,
            pairing=pairing,
            my_rank=my_rank,
            peer_rank=peer_rank,
            encrypt=self.encrypt,
            deadline=time.monotonic() + timeout,
            on_refused=_log_refusal,
        )

    def channel(self, sock: socket.socket, me: int, peer: int) -> Channel:
        return Channel(
            sock,
            me,
            peer,
            allow_pickle=self.pickle_allowed,
            max_message_bytes=self.max_message_bytes,
        )

    def __repr__(self) -> str:
        secret = "<hidden>" if self.secret is not None else None
        return (
            f"LinkSecurity(secret={secret}, encrypt={self.encrypt}, "
            f"allow_pickle={self.allow_pickle}, max_message_bytes={self.max_message_bytes})"
        )

    def __reduce__(self) -> str:
        raise TypeError("a LinkSecurity is not pickled (it holds the job secret's key)")


def _log_refusal(exc: PeerAuthenticationFailed) -> None:
    log.warning("refused a peer (dropped, pairing again): %s", exc)  # the text holds no secret


__all__ = ["MIN_MESSAGE_BYTES", "LinkSecurity"]

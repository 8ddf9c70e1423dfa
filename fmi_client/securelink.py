"""Securing a freshly connected peer link: TLS 1.3 (optional), then the job-secret proof.

Encryption is the standard library's TLS 1.3 over the connected socket with an
ephemeral self-signed certificate made per link (needs the optional ``cryptography``
package). Nobody verifies a certificate chain: the peers authenticate each other with
``fmi_client.handshake``'s proof of the job secret, run inside TLS and bound to the TLS
server's certificate (RFC 5929 ``tls-server-end-point``), so a man in the middle, or a
relay that terminates TLS, gives the two sides different bindings and both proofs fail.

Roles: a simultaneous-open link has no natural client and server, so the LOWER rank is
the TLS server and the higher rank the TLS client (``tls_role``); both sides know both
ranks, so they agree. With ``encrypt=False`` the proof runs in the clear (stdlib only):
strangers are refused, but traffic is readable and an on-path attacker could take over
the link after the handshake.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from fmi_client.autherrors import EncryptionUnavailable, PeerAuthenticationFailed
from fmi_client.errors import FmiClientError
from fmi_client.handshake import (
    PLAIN_BINDING,
    Failure,
    Handshake,
    HandshakeError,
    LinkSecret,
    State,
    tls_server_end_point,
)

INSTALL_HINT = (
    "encrypted peer links need the optional 'cryptography' package: "
    "pip install 'rendezvous[crypto]' (for a Lambda layer: fmi-layer build --with-crypto "
    "PYTHON_VERSION [--arch arm64], which adds cryptography built for Lambda's platform), "
    "or pass encrypt=False for authentication without encryption"
)


def require_encryption() -> None:
    """Raise EncryptionUnavailable (saying what to install) unless encryption can work.

    Call it where the user asks for encryption (a Communicator's constructor), so the
    error comes at once rather than after the first pairing.
    """
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        raise EncryptionUnavailable(INSTALL_HINT) from None


def tls_role(my_rank: int, peer_rank: int) -> Literal["server", "client"]:
    """The lower rank is the TLS server of a link, the higher rank its TLS client."""
    return "server" if my_rank < peer_rank else "client"


class _Identity:
    """An ephemeral key and self-signed certificate for one link (never written to disk
    where the OS offers an anonymous in-memory file)."""

    __slots__ = ("certificate_der", "pem")

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fmi-client link")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        self.certificate_der = certificate.public_bytes(serialization.Encoding.DER)
        self.pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return "_Identity(<ephemeral>)"


@contextmanager
def _pem_path(pem: bytes) -> Iterator[str]:
    """A path to ``pem`` for ``load_cert_chain`` (which only reads files), gone afterwards."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("fmi-link-identity", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="fmi-link-") as folder:  # pragma: no cover
        path = os.path.join(folder, "identity.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(pem)
        yield path


def _context(role: Literal["server", "client"], identity: _Identity | None) -> ssl.SSLContext:
    if role == "server":
        assert identity is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with _pem_path(identity.pem) as path:
            context.load_cert_chain(path)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # peers are authenticated by the job-secret proof
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_TICKET
    if role == "server":
        context.num_tickets = 0  # a link is never resumed: no session tickets to send
    return context


_client_context: ssl.SSLContext | None = None


def _shared_client_context() -> ssl.SSLContext:
    """The TLS client context holds no key, so every link shares one (making one costs
    about half a millisecond with OpenSSL 3)."""
    global _client_context
    if _client_context is None:
        _client_context = _context("client", None)
    return _client_context


def _remaining(deadline: float, what: str, pairing: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise HandshakeError(
            f"the deadline passed while {what} on pairing {pairing!r}", Failure.TIMEOUT
        )
    return left


def _start_tls(
    sock: socket.socket, pairing: str, my_rank: int, peer_rank: int, deadline: float
) -> tuple[ssl.SSLSocket, bytes]:
    role = tls_role(my_rank, peer_rank)
    identity = _Identity() if role == "server" else None
    context = _context(role, identity) if identity is not None else _shared_client_context()
    sock.settimeout(_remaining(deadline, "starting TLS", pairing))
    conn = context.wrap_socket(sock, server_side=role == "server", do_handshake_on_connect=False)
    try:
        conn.do_handshake()
        if identity is not None:
            return conn, tls_server_end_point(identity.certificate_der)
        peer_certificate = conn.getpeercert(binary_form=True)
        if not peer_certificate:
            raise HandshakeError("the TLS server sent no certificate", Failure.TLS_FAILED)
        return conn, tls_server_end_point(peer_certificate)
    except BaseException:
        conn.close()
        raise


def _authenticate(conn: socket.socket, handshake: Handshake, deadline: float) -> None:
    """Run the proof exchange with exact-size reads: no byte after it is consumed."""
    conn.settimeout(_remaining(deadline, "authenticating", handshake.pairing))
    conn.sendall(handshake.start())
    while handshake.state is not State.DONE:
        conn.settimeout(_remaining(deadline, "authenticating", handshake.pairing))
        data = conn.recv(handshake.next_size())
        if not data:
            raise handshake.eof()
        reply = handshake.receive_data(data)
        if reply:
            conn.sendall(reply)


def secure(
    sock: socket.socket,
    *,
    secret: LinkSecret | str | bytes,
    pairing: str,
    my_rank: int,
    peer_rank: int,
    encrypt: bool = True,
    deadline: float,
) -> socket.socket:
    """Encrypt (TLS 1.3, if ``encrypt``) and authenticate a connected link, or close it.

    ``deadline`` is a ``time.monotonic()`` instant. Returns the socket to use from now on
    (an ``ssl.SSLSocket`` when encrypted) in blocking mode with the timeout ``sock`` had,
    and TCP_NODELAY set.
    Raises PeerAuthenticationFailed naming the pairing (wrong or no secret, replay, relay,
    TLS failure, peer gone, deadline), EncryptionUnavailable without ``cryptography``;
    in every failure the socket is closed.
    """
    previous_timeout = sock.gettimeout()
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # small handshake messages must not wait for Nagle and delayed ACKs (40 ms)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link_secret = secret if isinstance(secret, LinkSecret) else LinkSecret(secret)
        if encrypt:
            require_encryption()
    except BaseException:
        sock.close()
        raise
    conn: socket.socket = sock
    try:
        if encrypt:
            conn, binding = _start_tls(sock, pairing, my_rank, peer_rank, deadline)
        else:
            binding = PLAIN_BINDING
        _authenticate(conn, Handshake(link_secret, pairing, my_rank, peer_rank, binding), deadline)
    except HandshakeError as exc:
        conn.close()
        raise _failed(exc, exc.reason, pairing, peer_rank) from None
    except ssl.SSLError as exc:
        conn.close()
        raise _failed(exc, Failure.TLS_FAILED, pairing, peer_rank) from None
    except TimeoutError as exc:
        conn.close()
        raise _failed(exc, Failure.TIMEOUT, pairing, peer_rank) from None
    except OSError as exc:
        conn.close()
        raise _failed(exc, Failure.PEER_CLOSED, pairing, peer_rank) from None
    except BaseException:
        conn.close()
        raise
    conn.settimeout(previous_timeout)
    return conn


def _failed(
    exc: BaseException, reason: Failure, pairing: str, peer_rank: int
) -> PeerAuthenticationFailed:
    detail = str(exc) or type(exc).__name__
    if reason is Failure.TLS_FAILED:
        detail = f"TLS failed ({detail}); does the peer use encrypt=True too?"
    return PeerAuthenticationFailed(
        f"could not secure the link to rank {peer_rank} on pairing {pairing!r} "
        f"[{reason.value}]: {detail}",
        name=pairing,
        reason=reason.value,
        rank=peer_rank,
    )


#: How long one peer may take to prove itself before we drop it and pair again.
HANDSHAKE_TIMEOUT = 10.0


def pair_securely(
    connect: Callable[[float], socket.socket],
    *,
    secret: LinkSecret | str | bytes,
    pairing: str,
    my_rank: int,
    peer_rank: int,
    encrypt: bool = True,
    deadline: float,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    on_refused: Callable[[PeerAuthenticationFailed], None] | None = None,
) -> socket.socket:
    """Pair through ``connect(seconds_left)`` and secure the link; a peer that fails the
    proof is dropped and we pair again, so a squatter costs a retry, not the job.

    ``connect`` is e.g. ``lambda left: pair(name, host, port, timeout=left)``. Each peer
    gets at most ``handshake_timeout`` s to prove itself. ``on_refused`` sees every
    refused peer (for a log line; the error holds no secret). When the deadline passes
    after a refusal, PeerAuthenticationFailed names the pairing and the last reason;
    without any refusal, ``connect``'s own error (PeerNeverArrived, ...) propagates.
    """
    link_secret = secret if isinstance(secret, LinkSecret) else LinkSecret(secret)
    if encrypt:
        require_encryption()
    refused: list[PeerAuthenticationFailed] = []
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the deadline passed")
            sock = connect(left)
        except (FmiClientError, OSError) as exc:
            if not refused:
                raise
            last = refused[-1]
            raise PeerAuthenticationFailed(
                f"no peer proved the job secret on pairing {pairing!r} before the deadline: "
                f"{len(refused)} refused (last: {last.reason}); then {exc}",
                name=pairing,
                reason=last.reason,
                rank=peer_rank,
            ) from exc
        attempt_deadline = min(deadline, time.monotonic() + handshake_timeout)
        try:
            return secure(
                sock,
                secret=link_secret,
                pairing=pairing,
                my_rank=my_rank,
                peer_rank=peer_rank,
                encrypt=encrypt,
                deadline=attempt_deadline,
            )
        except PeerAuthenticationFailed as exc:
            refused.append(exc)
            if on_refused is not None:
                on_refused(exc)

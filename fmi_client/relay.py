"""The client's way around NATs that cannot be punched: NAT discovery and the relay.

``discover_nat`` asks the rendezvous port (an OBSERVE request) and the discovery port
at once, from ONE local port, and compares the two public ports the server saw: equal
means an endpoint-independent mapping (punching can work), different means a
port-dependent one (symmetric: punching cannot). One round trip; a second port on one
address detects port-dependent mapping, not address-dependent mapping.

``relay_connect`` asks the server to splice this end with the peer that asks under the
same pairing name; the socket it returns carries the peer's bytes raw. Stdlib only.
Every socket is closed on every error path; nothing waits past ``deadline`` (a
``time.monotonic()`` value, as in :mod:`fmi_client.punch`).
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass
from typing import Literal

from fmi_client.credential import resolve_credential
from fmi_client.errors import FmiClientError, RendezvousUnreachable
from tcpunch import ENDPOINT_SIZE, Endpoint, unpack_endpoint
from tcpunch.errors import ProtocolError
from tcpunch.relay import (
    OBSERVE_REQUEST,
    REPLY_SIZE,
    RelayRefusal,
    RelayRequest,
    RelayStatus,
    decode_relay_reply,
    derive_session,
    encode_relay_request,
)

Mapping = Literal["endpoint-independent", "port-dependent"]

#: Why the server refused, and what to do about it (the message of RelayRefused).
_WHY = {
    RelayRefusal.DISABLED: (
        "the server runs with --no-relay: ask its operator to turn the relay on, or use "
        "relay='never' where both sides can punch"
    ),
    RelayRefusal.SERVER_FULL: (
        "the server's relay session cap (--relay-max-sessions) is reached: retry later, or "
        "ask its operator to raise it"
    ),
    RelayRefusal.PER_IP_CAP: (
        "this address has too many relay sockets (--relay-max-per-ip): fewer relayed links "
        "from this site, or ask the server's operator to raise it"
    ),
    RelayRefusal.BUSY: (
        "a relay session with this pairing name is already running: give each job its own "
        "pairing names"
    ),
    RelayRefusal.PEER_TIMEOUT: (
        "the peer did not ask for the relay within the server's wait: it may have stopped, "
        "or it uses relay='never' (both sides need settings that meet)"
    ),
    RelayRefusal.BAD_CREDENTIAL: (
        "the relay credential was not accepted: pass one minted by `rendezvous credential "
        "--prefix P` for a prefix of the name (credential= or $RENDEZVOUS_CREDENTIAL)"
    ),
    RelayRefusal.DRAINING: (
        "the server is shutting down: retry in a moment (its replacement or another "
        "replica answers)"
    ),
    RelayRefusal.MALFORMED: "the server could not read the request",
    RelayRefusal.NAME_PATTERN: (
        "the pairing name does not match the server's --name-pattern: use a name it allows"
    ),
}


_KNOWN_REFUSALS = frozenset(int(r) for r in RelayRefusal if r is not RelayRefusal.NONE)


class RelayRefused(FmiClientError):
    """The server answered a relay request with REFUSED; ``reason`` says why."""

    def __init__(self, message: str, *, reason: RelayRefusal) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NatMapping:
    mapping: Mapping
    local_port: int
    via_rendezvous: Endpoint  # what the rendezvous port saw
    via_discovery: Endpoint  # what the discovery port saw

    @property
    def punchable(self) -> bool:
        return self.mapping == "endpoint-independent"


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _reuse_socket(local_port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", local_port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def discover_nat(
    server_host: str,
    port: int,
    discovery_port: int,
    local_port: int,
    deadline: float,
    *,
    staged: bool = False,
) -> NatMapping:
    """How this host's NAT maps ``local_port`` (0: any free port), learned in one round trip.

    ``staged``: reach the rendezvous port only once the discovery port accepted (one
    round trip more), so a server without one (the original v1 server, the fork's)
    never sees the probe: pair() probes servers it knows nothing about this way.
    Raises RendezvousUnreachable when either server port does not answer by ``deadline``,
    or the two answers name different addresses (``discovery_port`` is another service:
    its first 8 bytes would otherwise read as a port-dependent mapping).
    """
    socks: list[socket.socket] = []
    try:
        host = socket.gethostbyname(server_host)
        first = _reuse_socket(local_port)
        socks.append(first)
        local_port = first.getsockname()[1]
        socks.append(_reuse_socket(local_port))
        targets = {socks[0]: (host, port), socks[1]: (host, discovery_port)}
        replies = _ask_both(targets, deadline, staged)
    except OSError as exc:
        raise RendezvousUnreachable(
            f"NAT discovery at {server_host} ports {port} and {discovery_port}: {exc}; check "
            "that the server runs with --discovery-port and that both ports are open"
        ) from None
    finally:
        for sock in socks:
            sock.close()
    via_rendezvous, via_discovery = (replies[s] for s in socks)
    if via_discovery.ip != via_rendezvous.ip:  # 8 bytes of another service, not an endpoint
        raise RendezvousUnreachable(
            f"NAT discovery at {server_host}: port {discovery_port} answered as if we were "
            f"{via_discovery.ip}, while port {port} saw {via_rendezvous.ip}: it is not the "
            "server's discovery port (or something in front of it rewrites addresses); pass "
            "the port of the server's --discovery-port, or None to skip discovery"
        )
    same = via_rendezvous.port == via_discovery.port
    return NatMapping(
        "endpoint-independent" if same else "port-dependent",
        local_port,
        via_rendezvous,
        via_discovery,
    )


def _ask_both(
    targets: dict[socket.socket, tuple[str, int]], deadline: float, staged: bool = False
) -> dict[socket.socket, Endpoint]:
    """Connect both, send OBSERVE to the rendezvous port, read 8 bytes from each
    (``staged``: the rendezvous port once the discovery port accepted)."""
    replies: dict[socket.socket, Endpoint] = {}
    buffers: dict[socket.socket, bytes] = {}
    rendezvous = next(iter(targets))
    with selectors.DefaultSelector() as selector:
        for index, (sock, address) in enumerate(targets.items()):
            if staged and sock is rendezvous:
                continue
            sock.connect_ex(address)
            selector.register(sock, selectors.EVENT_WRITE, index)
        while len(replies) < len(targets):
            remaining = _remaining(deadline)
            if remaining <= 0:
                raise TimeoutError("no answer before the deadline")
            for key, mask in selector.select(remaining):
                sock = key.fileobj  # type: ignore[assignment]  # a socket we registered
                if mask & selectors.EVENT_WRITE:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, f"connect to port {targets[sock][1]} failed")
                    if key.data == 0:
                        sock.send(OBSERVE_REQUEST)
                    elif staged:  # the discovery port accepted: now the rendezvous port
                        rendezvous.connect_ex(targets[rendezvous])
                        selector.register(rendezvous, selectors.EVENT_WRITE, 0)
                    selector.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                chunk = sock.recv(ENDPOINT_SIZE - len(buffers.get(sock, b"")))
                if not chunk:
                    raise ConnectionError(f"port {targets[sock][1]} closed without an answer")
                data = buffers[sock] = buffers.get(sock, b"") + chunk
                if len(data) == ENDPOINT_SIZE:
                    try:
                        replies[sock] = unpack_endpoint(data)
                    except ProtocolError as exc:
                        raise ConnectionError(f"port {targets[sock][1]}: {exc}") from None
                    selector.unregister(sock)
    return replies


def relay_connect(
    name: str | bytes,
    host: str,
    port: int,
    deadline: float,
    credential: str | bytes | None = None,
    session: bytes | None = None,
) -> socket.socket:
    """A socket spliced to the peer that asks under the same ``name``, through the server.

    ``credential`` (a server with an auth secret wants one for the name's prefix) is a
    str as ``rendezvous credential`` prints it, or its bytes; None takes
    ``$RENDEZVOUS_CREDENTIAL`` as ``pair()`` does. A str or the variable is checked
    first (ValueError, never holding the credential, when it is not one for ``name``).

    Raises RelayRefused (with ``.reason``) when the server refuses, RendezvousUnreachable
    when it cannot be reached or breaks off. A deadline that passes while waiting for
    the peer raises RelayRefused with reason PEER_TIMEOUT.
    """
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if not isinstance(credential, bytes | bytearray):
        text = name if isinstance(name, str) else raw.decode("utf-8", "surrogateescape")
        resolved = resolve_credential(credential, "v2", text)
        credential = resolved.encode("utf-8") if resolved is not None else None
    request = encode_relay_request(
        RelayRequest(raw, session or derive_session(raw), bytes(credential or b""))
    )
    where = f"relay for {raw.decode('utf-8', 'replace')!r} at {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=max(_remaining(deadline), 0.001))
    except OSError as exc:
        raise RendezvousUnreachable(f"{where}: cannot connect: {exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        while True:
            raw = _recv_exact(sock, REPLY_SIZE, deadline)
            if raw[0] == RelayStatus.REFUSED and raw[1] not in _KNOWN_REFUSALS:
                # v2's ERROR (status 3, then our address): a server that does not know
                # relay requests, or one that found ours malformed
                raise RelayRefused(
                    f"{where}: the server answered with a v2 ERROR: it does not support "
                    "the relay (an older server) or could not read the request",
                    reason=RelayRefusal.MALFORMED,
                )
            status = decode_relay_reply(raw)
            if status.status is RelayStatus.ACCEPTED:
                sock.settimeout(None)
                result, sock = sock, None  # type: ignore[assignment]
                return result
            if status.status is RelayStatus.REFUSED:
                raise RelayRefused(
                    f"{where}: refused ({status.refusal.name.lower()}): "
                    f"{_WHY.get(status.refusal, 'no reason given')}",
                    reason=status.refusal,
                )
    except TimeoutError:
        raise RelayRefused(
            f"{where}: the peer did not ask for the relay before our deadline",
            reason=RelayRefusal.PEER_TIMEOUT,
        ) from None
    except ProtocolError as exc:
        raise RendezvousUnreachable(
            f"{where}: the server sent bytes we cannot read: {exc}"
        ) from None
    except OSError as exc:
        raise RendezvousUnreachable(f"{where}: {exc}") from None
    finally:
        if sock is not None:
            sock.close()


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        remaining = _remaining(deadline)
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data

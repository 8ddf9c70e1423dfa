"""IPv4 endpoints as TCPunch puts them on the wire.

v1 sends the C struct ``{in_addr ip; in_port_t port;}``: 4 address bytes and 2 port
bytes in network order, then 2 bytes of struct padding that we always send as zero.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import NamedTuple

from tcpunch.errors import LocalProtocolError, Reason, RemoteProtocolError

ENDPOINT_SIZE = 8
_STRUCT = struct.Struct("!4sH2x")


@functools.lru_cache(maxsize=4096)
def _ipv4_packed(ip: str) -> bytes:
    # Cached: parsing with ipaddress costs several microseconds, and a server packs the
    # same few client addresses for every pairing.
    return ipaddress.IPv4Address(ip).packed


def check_ip_port(ip: object, port: object) -> bytes:
    """The 4 packed address bytes of a valid endpoint; LocalProtocolError otherwise."""
    if type(ip) is not str:
        raise LocalProtocolError(
            f"an endpoint's address is a str, not {type(ip).__name__}", Reason.WRONG_TYPE
        )
    if type(port) is not int:
        raise LocalProtocolError(
            f"an endpoint's port is an int, not {type(port).__name__}", Reason.WRONG_TYPE
        )
    try:
        packed = _ipv4_packed(ip)
    except ValueError as exc:
        raise LocalProtocolError(
            f"not an IPv4 address: {ip[:60]!r} (TCPunch carries IPv4 only)", Reason.BAD_ENDPOINT
        ) from exc
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port} is outside 0..65535", Reason.BAD_ENDPOINT)
    return packed


class _EndpointFields(NamedTuple):
    ip: str
    port: int


class Endpoint(_EndpointFields):
    """An IPv4 address and TCP port, as the rendezvous server saw them.

    Validated at construction: a non-IPv4 address or a port outside 0..65535 raises
    LocalProtocolError. The server builds endpoints of accepted IPv4 connections with
    ``tuple.__new__(Endpoint, (ip, port))``, which skips the check on its per-pairing path
    (the kernel's peer address is valid by construction).
    """

    __slots__ = ()

    def __new__(cls, ip: str, port: int) -> Endpoint:
        check_ip_port(ip, port)
        return tuple.__new__(cls, (ip, port))

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


_new_endpoint = tuple.__new__  # for endpoints valid by construction (decoded bytes)


def pack_ip_port(ip: str, port: int) -> bytes:
    """The 6 bytes address+port in network order (shared by v1 and v2)."""
    return check_ip_port(ip, port) + port.to_bytes(2, "big")


def unpack_ip_port(data: bytes) -> Endpoint:
    """Inverse of :func:`pack_ip_port` over exactly 6 bytes."""
    if len(data) != 6:
        raise RemoteProtocolError(
            f"an address+port takes 6 bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    ip = str(ipaddress.IPv4Address(bytes(data[:4])))
    return _new_endpoint(Endpoint, (ip, int.from_bytes(data[4:6], "big")))


def pack_endpoint(ip: str, port: int) -> bytes:
    """The 8-byte v1 reply: address, port, two zero padding bytes."""
    if type(port) is int and 0 <= port <= 0xFFFF:
        try:
            return _STRUCT.pack(_ipv4_packed(ip), port)  # one C call on the server's path
        except (ValueError, TypeError):
            pass  # pack_ip_port says what is wrong
    return pack_ip_port(ip, port) + b"\0\0"


def unpack_endpoint(data: bytes) -> Endpoint:
    """Parse an 8-byte v1 reply; the padding is ignored, as the C client does."""
    if len(data) != ENDPOINT_SIZE:
        raise RemoteProtocolError(
            f"a v1 endpoint takes {ENDPOINT_SIZE} bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    raw_ip, port = _STRUCT.unpack(data)
    return _new_endpoint(Endpoint, (str(ipaddress.IPv4Address(raw_ip)), port))

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


class Endpoint(NamedTuple):
    """An IPv4 address and TCP port, as the rendezvous server saw them."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@functools.lru_cache(maxsize=4096)
def _ipv4_packed(ip: str) -> bytes:
    # Cached: parsing with ipaddress costs several microseconds, and a server packs the
    # same few client addresses for every pairing.
    return ipaddress.IPv4Address(ip).packed


def pack_ip_port(ip: str, port: int) -> bytes:
    """The 6 bytes address+port in network order (shared by v1 and v2)."""
    try:
        packed = _ipv4_packed(ip)
    except ValueError as exc:
        raise LocalProtocolError(
            f"not an IPv4 address: {ip!r} (TCPunch carries IPv4 only)", Reason.BAD_ENDPOINT
        ) from exc
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port} is outside 0..65535", Reason.BAD_ENDPOINT)
    return packed + port.to_bytes(2, "big")


def unpack_ip_port(data: bytes) -> Endpoint:
    """Inverse of :func:`pack_ip_port` over exactly 6 bytes."""
    if len(data) != 6:
        raise RemoteProtocolError(
            f"an address+port takes 6 bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    return Endpoint(str(ipaddress.IPv4Address(data[:4])), int.from_bytes(data[4:6], "big"))


def pack_endpoint(ip: str, port: int) -> bytes:
    """The 8-byte v1 reply: address, port, two zero padding bytes."""
    if type(port) is int and 0 <= port <= 0xFFFF:
        try:
            return _STRUCT.pack(_ipv4_packed(ip), port)  # one C call on the server's path
        except ValueError:
            pass  # pack_ip_port says what is wrong
    return pack_ip_port(ip, port) + b"\0\0"


def unpack_endpoint(data: bytes) -> Endpoint:
    """Parse an 8-byte v1 reply; the padding is ignored, as the C client does."""
    if len(data) != ENDPOINT_SIZE:
        raise RemoteProtocolError(
            f"a v1 endpoint takes {ENDPOINT_SIZE} bytes, got {len(data)}", Reason.WRONG_SIZE
        )
    raw_ip, port = _STRUCT.unpack(data)
    return Endpoint(str(ipaddress.IPv4Address(raw_ip)), port)

"""The NAT-discovery port: every connection gets the endpoint the server saw, then EOF.

8 bytes as v1's reply (IPv4, port, two zero bytes). A client that connects here and to
the rendezvous port (an OBSERVE request, :mod:`tcpunch.relay`) from ONE local port learns
in one round trip whether its NAT maps per destination port: the two observed ports
differ behind a port-dependent (symmetric) mapping. A second *port* on one address
detects port-dependent mapping; address-dependent mapping would need a second address,
which this server does not have.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rendezvous.relay_metrics import RelayMetrics
from tcpunch import pack_endpoint


class DiscoveryProtocol(asyncio.Protocol):
    """Answer at once and close; reads nothing."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if TYPE_CHECKING:  # uvloop's transports are not asyncio's classes: no isinstance
            assert isinstance(transport, asyncio.WriteTransport)
        ip, port = transport.get_extra_info("peername")[:2]
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        if ":" not in ip:
            transport.write(pack_endpoint(ip, port))
            self.metrics.discovery += 1
        transport.close()

"""The NAT-discovery port: every connection gets the endpoint the server saw, then EOF.

8 bytes as v1's reply (IPv4, port, two zero bytes). A client that connects here and to
the rendezvous port (an OBSERVE request, :mod:`tcpunch.relay`) from ONE local port learns
in one round trip whether its NAT maps per destination port: the two observed ports
differ behind a port-dependent (symmetric) mapping. A second *port* on one address
detects port-dependent mapping; address-dependent mapping would need a second address,
which this server does not have.

Behind a PROXY-protocol balancer (``--proxy-protocol``) the socket's peer is the
balancer, whose port never equals the client's: answering it would tell every client
"port-dependent" and send every link through the relay. There the discovery port reads
the header first (:class:`ProxiedDiscovery`), under the rendezvous port's request
timeout and connection cap, and answers the client's endpoint the header names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rendezvous.proxy_protocol import Parsed, ProxyHeaderReader, ProxyProtocolError
from rendezvous.relay_metrics import RelayMetrics
from tcpunch import pack_endpoint

if TYPE_CHECKING:
    from rendezvous.dispatch import Dispatcher


def answer(transport: asyncio.WriteTransport, metrics: RelayMetrics, ip: str, port: int) -> None:
    """Write the 8-byte endpoint of an IPv4 client and close (an IPv6 one gets nothing:
    TCPunch's endpoints are IPv4)."""
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    if ":" not in ip:
        transport.write(pack_endpoint(ip, port))
        metrics.discovery += 1
    transport.close()


class DiscoveryProtocol(asyncio.Protocol):
    """Answer at once and close; reads nothing."""

    __slots__ = ("metrics",)

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if TYPE_CHECKING:  # uvloop's transports are not asyncio's classes: no isinstance
            assert isinstance(transport, asyncio.WriteTransport)
        answer(transport, self.metrics, *transport.get_extra_info("peername")[:2])


class ProxiedDiscovery:
    """The discovery port behind a PROXY-protocol balancer: its connections wait for a
    header, so they are bounded like the rendezvous port's (they count against its
    ``max_connections``, refused beyond it as ``connection_cap``) and each has the
    ``--request-timeout`` to send it. Refusals count in ``rendezvous_rejected_total``."""

    def __init__(self, dispatcher: Dispatcher, metrics: RelayMetrics) -> None:
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.open: set[ProxiedDiscoveryProtocol] = set()

    def protocol(self) -> ProxiedDiscoveryProtocol:
        return ProxiedDiscoveryProtocol(self)

    def full(self) -> bool:
        dispatcher = self.dispatcher
        return len(dispatcher.connections) + len(self.open) >= dispatcher.max_connections

    def reject(self, reason: str) -> None:
        self.dispatcher.metrics.reject(reason)

    def close_all(self) -> None:
        for protocol in list(self.open):
            protocol.abort()


class ProxiedDiscoveryProtocol(asyncio.Protocol):
    """Read the balancer's header, answer the client's endpoint it names, close."""

    __slots__ = ("reader", "shared", "timer", "transport")

    def __init__(self, shared: ProxiedDiscovery) -> None:
        self.shared = shared
        self.reader = ProxyHeaderReader()
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if TYPE_CHECKING:
            assert isinstance(transport, asyncio.Transport)
        shared = self.shared
        if shared.full():
            shared.reject("connection_cap")
            transport.abort()
            return
        self.transport = transport
        shared.open.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(shared.dispatcher.request_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            parsed = self.reader.feed(data)
        except ProxyProtocolError as exc:
            self.shared.reject(exc.proxy_reason.value)
            self.abort()
            return
        if not isinstance(parsed, Parsed):
            return  # more of the header to come
        header = parsed.header
        if header.command == "local":  # the balancer's own health check
            transport.close()
            return
        endpoint = header.client_endpoint()
        if endpoint is None and header.source is not None:
            self.shared.reject("not_ipv4")
            transport.close()
            return
        # UNSPEC: the socket's peer stands, as on the rendezvous port
        ip, port = endpoint if endpoint is not None else transport.get_extra_info("peername")[:2]
        answer(transport, self.shared.metrics, ip, port)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.shared.open.discard(self)

    def _timed_out(self) -> None:
        self.timer = None
        self.shared.reject("request_timeout")
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

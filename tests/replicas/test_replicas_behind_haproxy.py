"""End to end: TCPunch clients -> HAProxy (round robin, PROXY v2) -> two replica servers
sharing one redis-server. Each client learns its peer's real address and port, whichever
replica each side reached, in v1, v2 and mixed pairs."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from tcpunch import (
    V2_RESPONSE_SIZE,
    Endpoint,
    Status,
    decode_v2_response,
    encode_v2_request,
    unpack_endpoint,
)
from tests.replicas.glue import ReplicaServer
from tests.replicas.harness import haproxy


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


class Side:
    """One client: connects through the balancer and sends its request."""

    def __init__(self, port: int, name: str, protocol: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.me = Endpoint(*self.sock.getsockname()[:2])
        self.protocol = protocol
        request = name.encode() if protocol == "v1" else encode_v2_request(name)
        self.sock.sendall(request)

    def peer(self) -> Endpoint:
        """Wait for the PAIRED answer; returns the peer endpoint it names."""
        with self.sock:
            if self.protocol == "v1":
                return unpack_endpoint(_recv_exactly(self.sock, 8))
            while True:
                response = decode_v2_response(_recv_exactly(self.sock, V2_RESPONSE_SIZE))
                assert response.you == self.me  # the server saw our real endpoint
                if response.status is Status.PAIRED:
                    return response.peer
                assert response.status is Status.WAITING


def _pair(port: int, name: str, first: str, second: str) -> tuple[Side, Side, Endpoint, Endpoint]:
    a = Side(port, name, first)
    if first == "v2":  # wait until it is registered: its WAITING answer
        response = decode_v2_response(_recv_exactly(a.sock, V2_RESPONSE_SIZE))
        assert response.status is Status.WAITING
    else:
        time.sleep(0.2)  # a v1 waiter gets no answer while it waits
    b = Side(port, name, second)
    return a, b, a.peer(), b.peer()


@pytest.mark.timeout(120)
async def test_pairs_through_haproxy_across_two_replicas(redis_server, tmp_path):
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    servers = [ReplicaServer(redis_server.url, f"e{i}", prefix, True) for i in range(2)]
    ports = [await server.start() for server in servers]
    try:
        with haproxy(tmp_path, *ports) as port:
            crossed = 0
            kinds = [("v1", "v1"), ("v2", "v2"), ("v1", "v2"), ("v2", "v1")] * 2
            for i, (first, second) in enumerate(kinds):
                name = f"e2e_{i}_{first}_{second}"
                a, b, a_peer, b_peer = await asyncio.to_thread(_pair, port, name, first, second)
                assert a_peer == b.me and b_peer == a.me
                homes = [s for s in servers for e in s.served if e in (a.me, b.me)]
                assert len(homes) == 2
                crossed += homes[0] is not homes[1]
            assert crossed >= 1  # round robin put the two sides on different replicas
            assert all(s.room.ready for s in servers)
    finally:
        for server in servers:
            await server.stop()

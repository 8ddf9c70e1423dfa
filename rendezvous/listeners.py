"""The server's listening sockets (rendezvous, discovery), with TCP keepalive set."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rendezvous.settings import Settings


def listening_socket(host: str, port: int, settings: Settings) -> socket.socket:
    """A listener with TCP keepalive set: accepted sockets inherit it on Linux."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.keepalive_idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.keepalive_interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.keepalive_count)
        sock.bind((host, port))
        sock.listen(settings.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock

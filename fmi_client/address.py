"""Checks of what users pass to pair() and Communicator: ports, "host:port" strings, ranks.

Done up front so that a typo fails with a message naming it, instead of a socket call
wrapping 99999 around to another port or a bool rank waiting forever under a wrong name.
"""

from __future__ import annotations

import operator
from typing import Any

#: The port a TCPunch server listens on when "host:port" gives only the host.
DEFAULT_PORT = 10000


def check_port(port: Any, what: str = "port") -> int:
    """``port`` as an int in 1..65535, or a ValueError/TypeError that names ``what``."""
    if isinstance(port, bool):
        raise TypeError(f"{what} must be an int, got bool {port!r}")
    if isinstance(port, str):  # pair(name, *"host:port".split(":")) is common and fine
        if not port.strip().isdecimal():
            raise ValueError(f"{what} {port!r} is not a number")
        port = int(port)
    try:
        number = operator.index(port)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(port).__name__} {port!r}") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"{what} must be in 1..65535, got {number}")
    return number


def check_host(host: Any, what: str = "host") -> str:
    if not isinstance(host, str):
        raise TypeError(f"{what} must be a str, got {type(host).__name__} {host!r}")
    if not host.strip():
        raise ValueError(f"{what} must not be empty (give the server's name or IP address)")
    return host


def parse_rendezvous(rendezvous: Any) -> tuple[str, int]:
    """``"host:port"`` as (host, port); ``"host"`` alone means port DEFAULT_PORT (10000)."""
    if not isinstance(rendezvous, str):
        raise TypeError(
            f"rendezvous must be a 'host:port' str, got {type(rendezvous).__name__} {rendezvous!r}"
        )
    host, sep, port_text = rendezvous.rpartition(":")
    if not sep:
        host, port_text = rendezvous, ""
        if not host.strip():
            raise ValueError("rendezvous must be 'host:port', got an empty string")
        return host, DEFAULT_PORT
    if not host.strip():
        raise ValueError(
            f"rendezvous {rendezvous!r} has no host before ':'; write 'host:port', "
            "e.g. '127.0.0.1:10000'"
        )
    if not port_text.strip():
        raise ValueError(
            f"rendezvous {rendezvous!r} has no port after ':'; write 'host:port', or just "
            f"'host' for the default port {DEFAULT_PORT}"
        )
    try:
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(
            f"rendezvous {rendezvous!r}: port {port_text!r} is not a number; write 'host:port', "
            "e.g. '127.0.0.1:10000'"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError(f"rendezvous {rendezvous!r}: port must be in 1..65535, got {port}")
    return host, port


def check_int(value: Any, what: str) -> int:
    """``value`` as an int (anything with __index__ but bool), or a TypeError naming ``what``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}") from None

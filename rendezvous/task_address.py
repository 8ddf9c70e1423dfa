"""``--relay-advertise auto``: this replica's private IPv4 address, found at start.

On ECS (Fargate included) every container gets the task metadata endpoint v4 in
``$ECS_CONTAINER_METADATA_URI_V4``; its container document lists the task's awsvpc
addresses (``Networks[].IPv4Addresses``), the address the other replicas reach it at.
Elsewhere the host name's address is used, unless it is loopback. `rendezvous-deploy
server up --replicas N` sets ``RENDEZVOUS_RELAY_ADVERTISE=auto`` in the task definition.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping

AUTO = "auto"
METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
MAX_BYTES = 64 * 1024  # a container document is a few KiB
TIMEOUT = 2.0


def resolve(value: str | None, environ: Mapping[str, str]) -> str | None:
    """``value`` itself, unless it is ``auto``: then this replica's private IPv4 address.
    Raises ValueError saying what failed and what to pass instead."""
    if value != AUTO:
        return value
    uri = environ.get(METADATA_ENV)
    return from_metadata(uri) if uri else from_hostname()


def from_metadata(uri: str) -> str:
    """The first IPv4 address of the container's networks in the ECS metadata document."""
    if not uri.startswith("http://"):
        raise ValueError(f"--relay-advertise auto: ${METADATA_ENV} is not an http:// URL")
    try:
        with urllib.request.urlopen(uri, timeout=TIMEOUT) as response:
            body = response.read(MAX_BYTES + 1)
    except (OSError, urllib.error.URLError) as err:
        raise ValueError(
            f"--relay-advertise auto: the ECS metadata endpoint ${METADATA_ENV} did not "
            f"answer ({err}); pass this replica's address instead"
        ) from None
    if len(body) > MAX_BYTES:
        raise ValueError(f"--relay-advertise auto: the metadata document exceeds {MAX_BYTES} B")
    try:
        document = json.loads(body)
        networks = document.get("Networks") or []
        candidates = [a for n in networks for a in n.get("IPv4Addresses") or []]
    except (ValueError, AttributeError, TypeError):
        raise ValueError("--relay-advertise auto: the metadata document is not ECS's") from None
    for candidate in candidates:
        try:
            return str(ipaddress.IPv4Address(candidate))
        except ValueError:
            continue
    raise ValueError(
        "--relay-advertise auto: the metadata document names no IPv4 address (awsvpc "
        "network mode gives one); pass this replica's address instead"
    )


def from_hostname() -> str:
    """The host name's IPv4 address (``hostname -i``), refused when it is loopback."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError as err:
        raise ValueError(
            f"--relay-advertise auto: the host name does not resolve ({err}); pass this "
            f"replica's address instead"
        ) from None
    if ipaddress.IPv4Address(address).is_loopback:
        raise ValueError(
            f"--relay-advertise auto: the host name resolves to {address}, which other "
            f"replicas cannot reach, and ${METADATA_ENV} is not set; pass this replica's "
            f"address instead"
        )
    return address

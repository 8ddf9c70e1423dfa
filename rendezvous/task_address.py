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
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

AUTO = "auto"
METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
MAX_BYTES = 64 * 1024  # a container document is a few KiB
TIMEOUT = 2.0  # per socket operation
DEADLINE = 5.0  # for the whole document: an endpoint dripping bytes cannot stall start-up
_CHUNK = 4096


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # the endpoint answers itself; a redirect is an error


# No proxy (an HTTP_PROXY in the task's environment must not see or answer the request:
# the endpoint is link-local), no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


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
    body = _fetch(uri)
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
            address = ipaddress.IPv4Address(candidate)
        except ValueError:
            continue
        if _unusable(address):
            raise ValueError(
                f"--relay-advertise auto: the metadata document names {address}, which "
                "other replicas cannot reach; pass this replica's address instead"
            )
        return str(address)
    raise ValueError(
        "--relay-advertise auto: the metadata document names no IPv4 address (awsvpc "
        "network mode gives one); pass this replica's address instead"
    )


def _unusable(address: ipaddress.IPv4Address) -> bool:
    """Addresses no other replica reaches this one at (loopback would send forwarded
    relay ends back into the forwarding replica itself)."""
    return (
        address.is_loopback
        or address.is_unspecified
        or address.is_multicast
        or address.is_link_local
        or address == ipaddress.IPv4Address("255.255.255.255")
    )


def _fetch(uri: str) -> bytes:
    """At most MAX_BYTES + 1 bytes of the document, within DEADLINE seconds in all."""
    deadline = time.monotonic() + DEADLINE
    body = b""
    try:
        with _OPENER.open(uri, timeout=TIMEOUT) as response:
            while len(body) <= MAX_BYTES:
                if time.monotonic() > deadline:
                    raise ValueError(
                        f"--relay-advertise auto: the ECS metadata endpoint ${METADATA_ENV} "
                        f"did not send its document within {DEADLINE:.0f} s; pass this "
                        "replica's address instead"
                    )
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                body += chunk
    except (OSError, urllib.error.URLError) as err:
        raise ValueError(
            f"--relay-advertise auto: the ECS metadata endpoint ${METADATA_ENV} did not "
            f"answer ({err}); pass this replica's address instead"
        ) from None
    return body


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

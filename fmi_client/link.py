"""What pair() returns: a plain connected socket that also says how the link was made.

``PairedSocket`` is a ``socket.socket`` (so code that expects one keeps working) with one
extra attribute, ``link``: a :class:`LinkInfo` saying which path the link took, under
which pairing name, how many pairings it took, and whether a link check caught a stall.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields


@dataclass(repr=False)
class LinkInfo:
    """How a link came to be. ``path`` is "direct" (punched) or "relay" (through the
    server's relay). ``name`` is the pairing name the link was finally made under (the
    caller's name, or it with a ``~N`` suffix after re-pairing). ``pairings`` counts the
    pairings made, ``punch_failures`` the punches that did not get through and ``stalls``
    the links that failed the link check (each led to a re-pairing); ``problems`` says why,
    oldest first. ``verified_bytes`` is what the link check pushed each way (0: no
    check); ``punch_s`` and ``verify_s`` time the last punch and check. ``nat`` and
    ``peer_nat`` are both sides' NAT findings as the last rendezvous had them
    ("unknown", "endpoint-independent", "port-dependent" or "no-inbound"; the peer's
    travels through the rendezvous, v2 only), ``why`` why the path was chosen."""

    path: str = "direct"
    name: str = ""
    pairings: int = 0
    punch_failures: int = 0
    stalls: int = 0
    verified_bytes: int = 0
    punch_s: float = 0.0
    verify_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    nat: str = "unknown"
    peer_nat: str = "unknown"
    why: str = ""

    def __repr__(self) -> str:
        """The fields as the dataclass shows them, timings in ms steps (``punch_s=0.002``,
        not ``0.0021828399985679425``)."""
        shown = (
            f"{f.name}={value:.3f}" if isinstance(value, float) else f"{f.name}={value!r}"
            for f in fields(self)
            for value in (getattr(self, f.name),)
        )
        return f"LinkInfo({', '.join(shown)})"


class PairedSocket(socket.socket):
    """A connected TCP socket from pair(), with ``link`` (a LinkInfo)."""

    link: LinkInfo

    @classmethod
    def adopt(cls, sock: socket.socket, link: LinkInfo) -> PairedSocket:
        """Take over ``sock``'s connection (``sock`` is left detached); blocking, as
        pair() has always returned its sockets."""
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(None)
        adopted.link = link
        return adopted

"""NAT hints: each side's NAT finding travels through the rendezvous (v2 only).

A pair whose NATs cannot be punched should not spend its punch budget finding that out.
So a v2 requester says what it knows of its own NAT in the request's flags (offset 137,
4 bytes, network order; bit 0 is the credential trailer, :mod:`tcpunch.v2credential`)::

    bit 1      FLAG_READS_HINTS: "I read byte 50 of a PAIRED response"
    bits 2-3   the requester's own NatClass: 0 unknown, 1 endpoint-independent
               (port-preserving: punchable), 2 port-dependent (symmetric),
               3 no inbound (declared: the host accepts no inbound connection)
    bits 4-31  reserved: clients send zero; a server ignores them (it never refuses a
               request for them, so a later client's new bit reaches an older server)

In a PAIRED response to a requester that set bit 1, byte 50 (zero in the fork's
protocol) carries the PEER's class, marked so that zero keeps meaning "this server
passes no hints": ``HINT_MARK | class``, i.e. 0x10 unknown (also: a v1 peer, or a v2
peer that told nothing), 0x11 endpoint-independent, 0x12 port-dependent, 0x13 no
inbound. Every other response, and every response to a requester with bit 1 clear (the
fork's clients, FMI's, ours before this), keeps byte 50 zero: exactly today's bytes.
A server that does not know bit 1 sends zero, which reads as "no hints": the client
then punches as before.

Byte vectors: request flags of a hint-reading, port-dependent requester
``00 00 00 0a``; with a credential ``00 00 00 0b``; PAIRED to it with an
endpoint-independent peer: byte 50 = ``11``.
"""

from __future__ import annotations

import enum

from tcpunch.errors import Reason, RemoteProtocolError

#: Bit 1 of the v2 flags: the requester reads the peer's class in byte 50 of PAIRED.
FLAG_READS_HINTS = 0x0000_0002
NAT_CLASS_SHIFT = 2
NAT_CLASS_MASK = 0x0000_000C
#: Byte 50 of a PAIRED response carrying a hint: HINT_MARK | NatClass.
HINT_MARK = 0x10
#: The bits a server reads (bit 0 the credential trailer, 1-3 NAT hints); the rest are
#: reserved and ignored.
KNOWN_FLAGS = 0x0000_000F


class NatClass(enum.IntEnum):
    """What a side knows of its own NAT (2 bits on the wire)."""

    UNKNOWN = 0
    ENDPOINT_INDEPENDENT = 1  # one public port per local port, whatever the destination
    PORT_DEPENDENT = 2  # a new public port per destination (symmetric): cannot punch
    NO_INBOUND = 3  # declared: the host accepts no inbound connection, punched or not

    @property
    def label(self) -> str:
        """The name fmi_client uses: "unknown", "endpoint-independent", ..."""
        return _LABELS[self]

    @classmethod
    def from_label(cls, label: str) -> NatClass:
        return _BY_LABEL[label]


_LABELS = {
    NatClass.UNKNOWN: "unknown",
    NatClass.ENDPOINT_INDEPENDENT: "endpoint-independent",
    NatClass.PORT_DEPENDENT: "port-dependent",
    NatClass.NO_INBOUND: "no-inbound",
}
_BY_LABEL = {label: nat for nat, label in _LABELS.items()}
_CLASSES = tuple(NatClass)  # by value: flags_nat() indexes it


def hint_flags(nat: NatClass) -> int:
    """The flag bits of a requester that reads hints and reports ``nat``."""
    return FLAG_READS_HINTS | (int(nat) << NAT_CLASS_SHIFT)


def reads_hints(flags: int) -> bool:
    return bool(flags & FLAG_READS_HINTS)


def flags_nat(flags: int) -> NatClass:
    """The class a request reports (UNKNOWN when it reports none)."""
    return _CLASSES[(flags & NAT_CLASS_MASK) >> NAT_CLASS_SHIFT]


#: Byte 50 for each hint (None: no hint), as 1-byte strings and ints.
HINT_BYTE: dict[NatClass | None, int] = {None: 0, **{n: HINT_MARK | n for n in NatClass}}
_HINT_OF_BYTE: dict[int, NatClass | None] = {b: n for n, b in HINT_BYTE.items()}


def hint_for(reader_flags: int, peer_flags: int) -> NatClass | None:
    """What the server puts in the PAIRED response of a requester with ``reader_flags``
    about its peer, whose request had ``peer_flags`` (0 for a v1 peer): the peer's class,
    or None (byte 50 zero) when the requester did not ask for hints."""
    if not reader_flags & FLAG_READS_HINTS:
        return None
    return _CLASSES[(peer_flags & NAT_CLASS_MASK) >> NAT_CLASS_SHIFT]


def decode_hint(byte: int, paired: bool) -> NatClass | None:
    """Byte 50 of a v2 response: None (zero: no hint) or the peer's class.

    RemoteProtocolError for any other value, and for a hint outside a PAIRED response.
    """
    try:
        hint = _HINT_OF_BYTE[byte]
    except KeyError:
        raise RemoteProtocolError(
            f"byte 50 of a v2 response is 0 or a NAT hint 0x10..0x13, got {byte:#04x}",
            Reason.BAD_HINT,
        ) from None
    if hint is not None and not paired:
        raise RemoteProtocolError(
            f"a NAT hint ({byte:#04x}) in a v2 response that is not PAIRED", Reason.BAD_HINT
        )
    return hint

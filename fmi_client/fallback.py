"""The relay as pair()'s path: meet the peer of the last rendezvous in the server's relay.

Both sides reach the relay from the same rendezvous (its name and both public endpoints
give one session id, :func:`tcpunch.relay.pairing_session`), so neither has to tell the
other. A peer that has not asked within RELAY_MEET is gone, or was a stranger who took
the name and left: :class:`RelayPeerMissing` tells pair() to pair again under the
caller's name, where the real peer waits, so a squatter costs a retry, not the job.
"""

from __future__ import annotations

import logging
import socket
import time

from fmi_client.errors import LinkCheckFailed, PunchFailed
from fmi_client.link import LinkInfo
from fmi_client.relay import RelayRefused, relay_connect
from tcpunch import Endpoint
from tcpunch.relay import RelayRefusal, pairing_session

log = logging.getLogger("fmi_client")

#: How long a side waits in the relay for the peer it just paired with. A real peer asks
#: within about a punch round and a re-pairing wait of us (both decide from the same
#: rendezvous); one that has not asked by then is gone, or was a stranger who took the
#: name and left: we pair again under the caller's name, where the real peer waits.
RELAY_MEET = 10.0
#: Why a relayed link was reset during its check (only the server resets one).
RELAY_CUT = (
    "a reset on a relayed link comes from the server: a relay limit (such as "
    "--relay-max-bytes below the check's 2 x verify_bytes) or a drain"
)


class RelayPeerMissing(Exception):
    """The peer of the last rendezvous never asked for the relay (within RELAY_MEET)."""


def relayed(
    shared: tuple[str, Endpoint, Endpoint],
    server: tuple[str, int],
    deadline: float,
    credential: str | None,
    link: LinkInfo,
    cause: BaseException | None,
    failure: PunchFailed | None,
) -> socket.socket:
    """The link through the server's relay, under the session of the rendezvous ``shared``
    (its name and both public endpoints: the peer computes the same session id).

    RelayPeerMissing when the peer did not come within RELAY_MEET and time is left;
    at the deadline, ``failure`` (why this is a re-pairing) when it was a failed link
    check, so the caller hears what began it, else the RelayRefused."""
    pname, ours, theirs = shared
    session = pairing_session(pname.encode(), ours, theirs)
    log.info("pairing %r: going through the relay of %s:%d", pname, *server)
    meet_by = min(deadline, time.monotonic() + RELAY_MEET)
    try:
        sock = relay_connect(
            pname, server[0], server[1], meet_by,
            credential=credential.encode() if credential else None, session=session,
        )  # fmt: skip
    except RelayRefused as exc:
        if exc.reason is RelayRefusal.PEER_TIMEOUT:
            if time.monotonic() < deadline:
                raise RelayPeerMissing(str(exc)) from None
            if isinstance(failure, LinkCheckFailed):
                raise failure from exc  # the wait ended a re-pairing: say what began it
        if cause is not None:
            exc.add_note(f"the relay was the fallback after: {cause}")
        elif link.why:
            exc.add_note(f"the link went to the relay because: {link.why}")
        raise
    link.path = "relay"
    return sock

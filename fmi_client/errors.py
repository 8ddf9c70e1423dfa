"""The exceptions fmi_client raises: one base class, one subclass per way pairing or talking fails.

Each message names the pairing and the endpoints involved and says what to try, because
the person reading it is usually looking at a Lambda log with nothing else to go on.
"""

from __future__ import annotations


class FmiClientError(Exception):
    """Base class of every error fmi_client raises on purpose."""


class RendezvousUnreachable(FmiClientError):
    """The rendezvous server could not be reached or broke off the conversation."""


class RendezvousRefused(FmiClientError):
    """The rendezvous server was reached but refused this request (a policy, a cap, a rule)."""


class PeerNeverArrived(FmiClientError):
    """The deadline passed while the server was still waiting for the other side.

    ``rank`` is set when a Communicator knows which rank it was waiting for.
    """

    def __init__(self, message: str, *, name: str = "", rank: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.rank = rank


class PairingCancelled(FmiClientError):
    """The pairing was called off from another thread (its Communicator was closed)."""


class PunchFailed(FmiClientError):
    """Both sides were paired but no TCP connection got through their NATs in time."""


class LinkCheckFailed(PunchFailed):
    """A punched link failed the link check (pair()'s ``verify_bytes``) and re-pairing did
    not give a working one before the deadline. ``stalled`` is True when the link stopped
    carrying bytes, False when the peer did not speak the check (verify_bytes differs)."""

    def __init__(self, message: str, *, stalled: bool = True) -> None:
        super().__init__(message)
        self.stalled = stalled


class PeerLost(FmiClientError):
    """An established connection to a rank ended (EOF or reset) while we needed it."""

    def __init__(self, message: str, *, rank: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank


class NameTooLong(FmiClientError, ValueError):
    """A pairing name does not fit the wire format (v2: 99 bytes, v1: 100 bytes)."""

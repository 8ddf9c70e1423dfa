"""fmi_client: direct TCP between serverless functions through a TCPunch rendezvous server.

``pair(name, host, port)`` gives a connected socket to whoever else asks for ``name``;
``Communicator(rank, world_size, "host:port", comm_name)`` gives mpi4py-style
send/recv and collectives over such connections; ``fmi_client.compat`` is a drop-in for
FMI's Python module. Pure Python, no dependencies; numpy arrays travel as raw buffers
when numpy is installed.
"""

from fmi_client.autherrors import EncryptionUnavailable, PeerAuthenticationFailed
from fmi_client.buffers import IN_PLACE
from fmi_client.communicator import Communicator
from fmi_client.errors import (
    FmiClientError,
    NameTooLong,
    PairingCancelled,
    PeerLost,
    PeerNeverArrived,
    PunchFailed,
    RendezvousRefused,
    RendezvousUnreachable,
)
from fmi_client.framing import FrameTooLarge, PickleRefused
from fmi_client.ops import BAND, BOR, LAND, LOR, MAX, MAXLOC, MIN, MINLOC, PROD, SUM, Op
from fmi_client.p2p import ANY_SOURCE, ANY_TAG, UNDEFINED, Request, Status
from fmi_client.punch import pair

__version__ = "0.1.0"

__all__ = [
    "ANY_SOURCE",
    "ANY_TAG",
    "BAND",
    "BOR",
    "IN_PLACE",
    "LAND",
    "LOR",
    "MAX",
    "MAXLOC",
    "MIN",
    "MINLOC",
    "PROD",
    "SUM",
    "UNDEFINED",
    "Communicator",
    "EncryptionUnavailable",
    "FmiClientError",
    "FrameTooLarge",
    "NameTooLong",
    "Op",
    "PairingCancelled",
    "PeerAuthenticationFailed",
    "PeerLost",
    "PeerNeverArrived",
    "PickleRefused",
    "PunchFailed",
    "RendezvousRefused",
    "RendezvousUnreachable",
    "Request",
    "Status",
    "pair",
]

"""What the Communicator hands its collectives: its connections as a Transport on the
collective tag, a guard that closes them on any failure, and the pairing schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmi_client.communicator import Communicator

COLL = -1  # the tag of collective traffic; user tags are >= 0


def round_robin(world_size: int) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint rank pairs covering every pair once (the circle method)."""
    players = world_size + (world_size % 2)
    rounds = []
    for r in range(players - 1):
        matches = []
        for i in range(players // 2):
            a = (r + i) % (players - 1)
            b = players - 1 if i == 0 else (r - i) % (players - 1)
            if a < world_size and b < world_size:
                matches.append((min(a, b), max(a, b)))
        rounds.append(matches)
    return rounds


class CollectiveLinks:
    """A Communicator as the Transport of the collectives: its connections, on the tag of
    collective traffic (so collectives never take a user's point-to-point messages).

    Known peers are looked up in the Communicator's own dict (close() and failures empty
    it); an unknown one is paired by ``Communicator._channel``, which also refuses on a
    closed or broken communicator.
    """

    __slots__ = ("_channels", "_connect", "rank", "size")

    def __init__(self, comm: Communicator) -> None:
        self.rank = comm.rank
        self.size = comm.size
        self._channels = comm._channels
        self._connect = comm._channel

    def send(self, obj: Any, peer: int) -> None:
        (self._channels.get(peer) or self._connect(peer)).send(obj, COLL)

    def recv(self, peer: int, out: Any = None) -> Any:
        return (self._channels.get(peer) or self._connect(peer)).recv(COLL, out)

    def exchange(self, obj: Any, peer: int, out: Any = None) -> Any:
        return (self._channels.get(peer) or self._connect(peer)).exchange(obj, COLL, out)


class Guard:
    """Turns any failure inside a collective into a closed communicator (see _abort).

    Not only network errors: a user op that raises, a frame that does not decode, an
    interrupt. A rank that leaves a collective half done would leave its peers waiting
    for a message that never comes; closing its connections makes them raise PeerLost.
    (Argument errors are raised before a collective starts and break nothing.)
    """

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.comm._abort(exc)


__all__ = ["COLL", "CollectiveLinks", "Guard", "round_robin"]

"""The Communicator's connections: made lazily, one pairing per peer at a time
(``LazyPairing``, mixed into the Communicator, which also says how each link was made),
handed to its collectives as a Transport on the collective tag, guarded so that any
failure closes them, and the pairing schedule."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from fmi_client.channel import Channel
from fmi_client.errors import FmiClientError, PeerNeverArrived, PunchFailed
from fmi_client.link import LinkInfo
from fmi_client.punch import pair_raw

if TYPE_CHECKING:
    from fmi_client.communicator import Communicator

log = logging.getLogger("fmi_client")

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


class LazyPairing:
    """The Communicator's connection to each peer, paired under ``pairing_name`` the
    first time the two talk (or all at once by ``connect_all``), then reused both ways."""

    _channels: dict[int, Channel]  # peer -> its connection; set by Communicator.__init__
    _link_infos: dict[int, LinkInfo]  # peer -> how its link was made; kept after close()

    def links(self) -> dict[int, LinkInfo]:
        """How each link this rank made came to be, by peer rank (in rank order): its
        ``path`` ("direct": punched, or "relay": through the server), ``pairings``,
        ``punch_failures``, ``stalls`` and timings (a ``fmi_client.link.LinkInfo``).

        Links are made lazily, so only peers talked to so far are here (``connect_all()``
        first for all of them); kept after close() and after a failure, for reports.
        """
        comm = cast("Communicator", self)
        with comm._lock:
            return dict(sorted(comm._link_infos.items()))

    def link_info(self, peer: int) -> LinkInfo | None:
        """How the link to rank ``peer`` was made (see links()); None before there is one
        (and for this rank itself, which needs none)."""
        comm = cast("Communicator", self)
        comm._check_peer(peer, "peer")
        with comm._lock:
            return comm._link_infos.get(peer)

    def _channel(self, peer: int) -> Channel:
        """The connection to ``peer``, paired now if need be. Only one pairing per peer
        runs at a time (from any thread: an any-source receive, an isend's outbox), since
        two under one name would be paired with each other by the server."""
        channel = self._channels.get(peer)
        if channel is not None:
            return channel
        comm = cast("Communicator", self)
        while True:
            with comm._lock:
                channel = comm._channels.get(peer)
                if channel is not None:
                    return channel
                pending = comm._pairing.get(peer)
                if pending is None:
                    mine = comm._pairing[peer] = threading.Event()
            if pending is None:
                return comm._pair_registered(peer, mine)
            pending.wait()
            channel = comm._channels.get(peer)
            if channel is not None:
                return channel
            error = comm._pair_errors.pop(peer, None)
            if error is not None:
                raise error

    def _pair_registered(self, peer: int, event: threading.Event) -> Channel:
        comm = cast("Communicator", self)
        try:
            return comm._pair_now(peer)
        except BaseException as exc:  # for the threads waiting on the same pairing
            comm._pair_errors[peer] = exc
            raise
        finally:
            with comm._lock:
                comm._pairing.pop(peer, None)
            event.set()

    def _pair_now(self, peer: int) -> Channel:
        comm = cast("Communicator", self)
        if comm._closed:
            raise FmiClientError(f"rank {comm.rank}: the communicator is closed")
        if comm._broken is not None:
            raise FmiClientError(
                f"rank {comm.rank}: the communicator is unusable after an earlier failure: "
                f"{comm._broken}"
            )
        name = comm.pairing_name(comm.rank, peer)
        started = time.monotonic()
        made: list[LinkInfo] = []  # each pairing's; the last one is the link kept

        def connect(seconds: float) -> socket.socket:  # secured below, not by pair()
            sock = pair_raw(
                name,
                comm.host,
                comm.port,
                timeout=seconds,
                protocol=comm.protocol,
                punch_timeout=comm.punch_timeout,
                credential=comm._credential,
                relay=comm.relay,
                nat=comm.nat,
                discovery_port=comm.discovery_port,
                cancel=comm._cancel,
            )
            made.append(sock.link)
            return sock

        try:  # with a secret: authenticated (and encrypted) before the Channel exists
            sock = comm._security.pair(
                connect, comm.timeout, pairing=name, my_rank=comm.rank, peer_rank=peer
            )
        except PeerNeverArrived as exc:
            raise PeerNeverArrived(
                f"rank {comm.rank}: rank {peer} never arrived (pairing {name!r} at "
                f"{comm.host}:{comm.port}, waited {time.monotonic() - started:.1f} s of "
                f"timeout={comm.timeout:g}). Did rank {peer} start, with the same comm_name "
                "and world size?",
                name=name,
                rank=peer,
            ) from exc
        except PunchFailed as exc:
            raise PunchFailed(f"rank {comm.rank} and rank {peer}: {exc}") from exc
        if comm.op_timeout is not None:
            sock.settimeout(comm.op_timeout)
        channel = comm._security.channel(sock, comm.rank, peer)
        with comm._lock:
            if comm._closed_meanwhile():
                channel.close()
                raise FmiClientError(f"rank {comm.rank}: the communicator is closed")
            outbox = comm._outbox.get(peer)
            if outbox is not None:  # isends queued before we were paired go first
                channel._sender = outbox[0]
            comm._channels[peer] = channel
            link = comm._link_infos[peer] = made[-1]
        log.info(
            "rank %d: link to rank %d is %s (pairing %r: %d pairing(s), %d punch failure(s), "
            "%d stall(s); %.3f s)%s",
            comm.rank, peer, link.path, link.name, link.pairings, link.punch_failures,
            link.stalls, time.monotonic() - started, f": {link.why}" if link.why else "",
        )  # fmt: skip
        return channel

    def connect_all(self, *, concurrency: int = 8) -> None:
        """Connect to every other rank now, ``concurrency`` pairings at a time.

        Pairings are started in the same global order on every rank (rounds of disjoint
        pairs, the circle method), so the earliest pending pairing always has both of its
        ranks trying: no deadlock, whatever the window. Threads end before this returns.
        """
        comm = cast("Communicator", self)
        mine = [
            b if a == comm.rank else a
            for matches in round_robin(comm.size)
            for a, b in matches
            if comm.rank in (a, b) and (b if a == comm.rank else a) not in comm._channels
        ]
        if not mine:
            return
        with (
            comm._guard(),
            ThreadPoolExecutor(
                max_workers=max(1, min(concurrency, len(mine))),
                thread_name_prefix=f"fmi-connect-{comm.rank}",
            ) as pool,
        ):
            futures = [pool.submit(comm._channel, peer) for peer in mine]
            errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
            if errors:
                raise errors[0]

    def _closed_meanwhile(self) -> bool:
        """Whether close() ran (from another thread) while we were pairing."""
        comm = cast("Communicator", self)
        return comm._closed


__all__ = ["COLL", "CollectiveLinks", "Guard", "LazyPairing", "round_robin"]

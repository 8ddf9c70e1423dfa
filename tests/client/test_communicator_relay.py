"""Communicator(relay=...): every link takes the path asked for, collectives run over
relayed links (the server's relay counts their sessions and bytes), links() and the log
say which path each link took, Split keeps the setting, a bad setting fails up front."""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

import numpy as np
import pytest

from fmi_client import Communicator
from fmi_client.link import LinkInfo
from tests.client.threadranks import comm_for, run_ranks

WORLD = 4
ARRAY = 256 * 1024  # float32 items: 1 MiB, the large allreduce (reduce-scatter + allgather)


def paths(links: dict[int, LinkInfo]) -> dict[int, str]:
    return {peer: link.path for peer, link in links.items()}


def test_relay_always_relays_every_link_and_collectives_work_over_it(server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fmi_client")
    metrics = server.server.relay.metrics
    started, relayed = metrics.started, metrics.bytes
    name = f"ra{os.getpid()}"

    def rank(me: int) -> dict[str, Any]:
        with comm_for(server, name, me, WORLD, relay="always") as comm:
            assert comm.relay == "always"
            comm.connect_all()
            comm.barrier()
            total = comm.allreduce(np.full(ARRAY, me + 1, dtype=np.float32))
            told = comm.bcast({"from": "root", "n": 7} if me == 0 else None, root=0)
            half = comm.Split(color=me % 2, key=me)
            assert half is not None
            with half:
                inner = half.allreduce(me)
                half_links = half.links()
                half_relay = half.relay
            comm.barrier()
            return {
                "total": total,
                "told": told,
                "links": comm.links(),
                "inner": inner,
                "half_links": half_links,
                "half_relay": half_relay,
            }

    results = run_ranks(WORLD, rank)
    for me, got in enumerate(results):
        np.testing.assert_array_equal(got["total"], np.full(ARRAY, 10, dtype=np.float32))
        assert got["told"] == {"from": "root", "n": 7}
        others = [peer for peer in range(WORLD) if peer != me]
        assert paths(got["links"]) == dict.fromkeys(others, "relay")
        for link in got["links"].values():
            assert link.pairings == 1 and link.stalls == 0 and link.punch_failures == 0
            assert link.verified_bytes == 65536  # the link check ran through the relay
        assert got["half_relay"] == "always"
        assert got["inner"] == (0 + 2 if me % 2 == 0 else 1 + 3)
        assert paths(got["half_links"]) == {1 - me // 2: "relay"}
    # 6 links in the world, one in each half: every one a relay session of the server
    assert metrics.started == started + 6 + 2
    assert metrics.bytes - relayed > 2 * WORLD * ARRAY * 4 * (WORLD - 1) // WORLD
    for me in range(WORLD):
        for peer in range(WORLD):
            if peer != me:
                line = rf"rank {me}: link to rank {peer} is relay \(pairing .* s\): relay='always'$"
                assert re.search(line, caplog.text, re.MULTILINE), caplog.text  # and why


@pytest.mark.parametrize("relay", ["never", "auto"])
def test_on_loopback_never_and_auto_punch_direct_links(server, relay: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fmi_client")
    started = server.server.relay.metrics.started
    name = f"rn{relay}{os.getpid()}"

    def rank(me: int) -> tuple[float, dict[int, LinkInfo]]:
        with comm_for(server, name, me, 3, relay=relay) as comm:
            comm.connect_all()
            total = comm.allreduce(float(me))
            comm.barrier()
            return total, comm.links()

    for me, (total, links) in enumerate(run_ranks(3, rank)):
        assert total == 3.0
        assert paths(links) == {peer: "direct" for peer in range(3) if peer != me}
        assert all(link.pairings >= 1 for link in links.values())
    assert server.server.relay.metrics.started == started  # nothing went through the relay
    assert f"link to rank 1 is direct (pairing '{name}#0-1'" in caplog.text


def test_link_info_before_and_after_pairing_and_after_close(server) -> None:
    name = f"li{os.getpid()}"

    def rank(me: int) -> tuple[Any, ...]:
        comm = comm_for(server, name, me, 2, relay="always")
        before = comm.link_info(1 - me), comm.links()
        comm.send(f"hello from {me}", 1 - me)
        got = comm.recv(1 - me)
        during = comm.link_info(1 - me)
        comm.close()
        return before, got, during, comm.links(), comm.link_info(me)

    for me, (before, got, during, after, own) in enumerate(run_ranks(2, rank)):
        assert before == (None, {})  # pairing is lazy: no link yet
        assert got == f"hello from {1 - me}"
        assert during is not None and during.path == "relay"
        assert during.name == f"{name}#0-1"
        assert after == {1 - me: during}  # kept after close, for reports
        assert own is None  # a rank needs no link to itself
    with comm_for(server, name, 0, 2) as comm, pytest.raises(ValueError, match="peer must be"):
        comm.link_info(2)


@pytest.mark.parametrize("bad", ["sometimes", "ALWAYS", "", None, True, ["always"]])
def test_a_bad_relay_setting_fails_before_any_traffic(bad: object) -> None:
    with socket.socket() as listener:  # where the server would be: nobody must knock
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        with pytest.raises(ValueError) as info:
            Communicator(0, 2, f"127.0.0.1:{port}", "bad-relay", relay=bad)  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            listener.accept()
    message = str(info.value)
    assert message.startswith("relay must be one of 'auto', 'never', 'always'")
    assert message.endswith(f"not {bad!r}")


def test_relayed_links_are_authenticated_and_encrypted_end_to_end(server) -> None:
    """With a job secret the TLS handshake and the proof run through the relay, which
    forwards them unread: the Channel sits on a TLS socket whose link path is "relay"."""
    import ssl

    name = f"rs{os.getpid()}"
    secret = "job-secret-0123456789abcdef"

    def rank(me: int) -> tuple[Any, ...]:
        with comm_for(server, name, me, 2, relay="always", secret=secret) as comm:
            total = comm.allreduce(np.arange(8, dtype=np.int64) * (me + 1))
            return total, type(comm._channels[1 - me].sock), comm.link_info(1 - me)

    for total, kind, link in run_ranks(2, rank):
        np.testing.assert_array_equal(total, np.arange(8) * 3)
        assert issubclass(kind, ssl.SSLSocket)
        assert link is not None and link.path == "relay"


def test_a_declared_no_inbound_rank_relays_every_link_without_punching() -> None:
    """``nat="no-inbound"`` on one rank (a platform that accepts no inbound connection):
    its hint reaches its peers through a server with a discovery port, so both ends of
    each of its links relay at once (no failed punch first); the other ranks' link is
    punched."""
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, discovery_port=0) as srv:
        assert srv.server is not None and srv.server.discovery_port
        name = f"ni{os.getpid()}"

        def rank(me: int) -> dict[int, LinkInfo]:
            with Communicator(
                me, 3, f"{srv.host}:{srv.port}", name, timeout=30,
                nat="no-inbound" if me == 0 else "auto",
                discovery_port=srv.server.discovery_port,
            ) as comm:  # fmt: skip
                assert comm.allreduce(me + 1) == 6
                comm.barrier()
                return comm.links()

        results = run_ranks(3, rank)
    for me, links in enumerate(results):
        for peer, link in links.items():
            through = 0 in (me, peer)
            assert link.path == ("relay" if through else "direct"), (me, peer, link)
            assert link.punch_failures == 0 and link.pairings == 1, link
            if through:
                assert "no inbound" in link.why, link


@pytest.mark.parametrize(("keyword", "value"), [("nat", "symmetric"), ("discovery_port", 70000)])
def test_a_bad_nat_setting_fails_before_any_traffic(keyword: str, value: object) -> None:
    with pytest.raises(ValueError, match=keyword):
        Communicator(0, 2, "127.0.0.1:1", "p", **{keyword: value})

"""NAT hints through a real server over loopback: each side's NAT class (v2 flag bits
2-3) reaches its peer in byte 50 of PAIRED when the peer asked (bit 1); everyone else
gets the bytes they always got. v1 peers, resumes and reserved bits included."""

from __future__ import annotations

from tcpunch import NatClass, Status, hint_flags, pack_endpoint
from tests.server.wire import v1, v2, wait_for

PD = hint_flags(NatClass.PORT_DEPENDENT)
EI = hint_flags(NatClass.ENDPOINT_INDEPENDENT)
NO_INBOUND = hint_flags(NatClass.NO_INBOUND)


async def test_each_side_gets_the_others_class(server, unique):
    name = unique()
    a = await v2(server.port, name, flags=PD)
    waiting = await a.read(51)
    assert waiting[0] == Status.WAITING and waiting[50] == 0  # hints only in PAIRED
    b = await v2(server.port, name, flags=EI)
    paired_b = await b.read(51)
    paired_a = await a.read(51)
    assert paired_b[0] == paired_a[0] == Status.PAIRED
    assert paired_b[50] == 0x12  # a is port-dependent
    assert paired_a[50] == 0x11  # b is endpoint-independent
    for client in (a, b):
        assert await client.read_rest() == b""
        await client.close()


async def test_a_client_that_did_not_ask_gets_todays_bytes(server, unique):
    """The fork's clients send flags 0: byte 50 stays zero whatever the peer reported;
    the hint-reading side learns nothing of the old one (unknown, 0x10)."""
    name = unique()
    old = await v2(server.port, name)
    token = (await old.read_v2()).token
    new = await v2(server.port, name, flags=NO_INBOUND)
    response = await new.read_v2()
    assert response.peer_nat is NatClass.UNKNOWN
    raw = await old.read(51)
    assert raw[50] == 0
    assert raw[:13] == bytes([1]) + pack_endpoint(*old.local)[:6] + pack_endpoint(*new.local)[:6]
    assert raw[13:50] == token.encode().ljust(37, b"\0")
    await old.close()
    await new.close()


async def test_a_v1_peer_counts_as_unknown_both_ways(server, unique):
    name = unique()
    waiter = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    newcomer = await v2(server.port, name, flags=PD)
    response = await newcomer.read_v2()
    assert response.peer == waiter.local and response.peer_nat is NatClass.UNKNOWN
    assert await waiter.read_rest() == pack_endpoint(*newcomer.local)  # v1: 8 bytes, as ever
    for client in (waiter, newcomer):
        await client.close()
    name = unique()
    hinted = await v2(server.port, name, flags=EI)
    assert (await hinted.read_v2()).status is Status.WAITING
    late = await v1(server.port, name)
    assert await late.read_rest() == pack_endpoint(*hinted.local)
    paired = await hinted.read_v2()
    assert paired.peer == late.local and paired.peer_nat is NatClass.UNKNOWN
    for client in (hinted, late):
        await client.close()


async def test_a_token_resume_reports_its_class_again(server, unique):
    """The resumed request carries the flags again (as the client exchange sends them):
    the class comes from the connection that is waiting now."""
    name = unique()
    first = await v2(server.port, name, flags=EI)
    token = (await first.read_v2()).token
    await first.close()
    await wait_for(lambda: len(server.room) == 0)
    again = await v2(server.port, name, token, flags=PD)
    assert (await again.read_v2()).token == token
    peer = await v2(server.port, name, flags=EI)
    assert (await peer.read_v2()).peer_nat is NatClass.PORT_DEPENDENT
    resumed = await again.read_v2()
    assert resumed.status is Status.PAIRED and resumed.token == token
    assert resumed.peer_nat is NatClass.ENDPOINT_INDEPENDENT
    for client in (again, peer):
        await client.close()


async def test_reserved_bits_are_ignored_not_refused(server, unique):
    name = unique()
    a = await v2(server.port, name, flags=0xFFFF_FFF0 | PD)
    assert (await a.read_v2()).status is Status.WAITING
    b = await v2(server.port, name, flags=0xFFFF_FFF0 | 0x4)  # class 1, bit 1 clear
    raw_b = await b.read(51)
    assert raw_b[0] == Status.PAIRED and raw_b[50] == 0  # did not ask
    assert (await a.read_v2()).peer_nat is NatClass.ENDPOINT_INDEPENDENT
    assert sum(server.metrics.rejected.values()) == 0
    for client in (a, b):
        await client.close()

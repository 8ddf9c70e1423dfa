"""Pairing over real loopback sockets: v1, v2, mixed, expiry, tokens, dead waiters."""

from __future__ import annotations

import asyncio
import socket

from tcpunch import Endpoint, Status, pack_endpoint
from tests.server.wire import connect, v1, v2, wait_for


async def test_v1_pair_byte_exact(server, unique):
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    b = await v1(server.port, name)
    # The newcomer gets the waiter's 8 bytes (zero padding) and the server closes.
    assert await b.read_rest() == pack_endpoint(*a.local)
    assert await a.read_rest() == pack_endpoint(*b.local)
    assert pack_endpoint(*a.local)[6:] == b"\0\0"
    assert len(server.room) == 0 and server.pairings == 1
    await a.close()
    await b.close()


async def test_v1_own_endpoint_arrives_at_once_and_waiter_keeps_waiting(server, unique):
    a = await v1(server.port, unique())  # v1() asserts the 8-byte own endpoint
    assert await a.silent_for(0.2)
    await a.close()


async def test_third_client_starts_a_new_pairing(server, unique):
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    b = await v1(server.port, name)
    await a.read_rest()
    await b.read_rest()
    c = await v1(server.port, name)
    assert await c.silent_for(0.2)
    assert server.room.waiter(name.encode()) is not None
    for client in (a, b, c):
        await client.close()


async def test_v2_waiting_then_paired_on_same_connection(server, unique):
    name = unique()
    a = await v2(server.port, name)
    waiting = await a.read_v2()
    assert waiting.status is Status.WAITING
    assert waiting.you == a.local and waiting.peer == Endpoint("0.0.0.0", 0)
    assert waiting.token
    b = await v2(server.port, name)
    paired_b = await b.read_v2()
    assert paired_b.status is Status.PAIRED
    assert (paired_b.you, paired_b.peer) == (b.local, a.local)
    paired_a = await a.read_v2()
    assert paired_a.status is Status.PAIRED
    assert (paired_a.you, paired_a.peer) == (a.local, b.local)
    assert paired_a.token == waiting.token
    assert await a.read_rest() == b"" and await b.read_rest() == b""
    await a.close()
    await b.close()


async def test_v2_response_is_51_bytes_with_trailing_zero(server, unique):
    a = await v2(server.port, unique())
    raw = await a.read(51)
    assert raw[0] == 0 and raw[50] == 0
    assert await a.silent_for(0.1)  # nothing beyond the 51 bytes
    await a.close()


async def test_v1_waiter_v2_newcomer_pair(server, unique):
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    b = await v2(server.port, name)
    paired = await b.read_v2()
    assert paired.status is Status.PAIRED and paired.peer == a.local
    assert await a.read_rest() == pack_endpoint(*b.local)
    await a.close()
    await b.close()


async def test_v2_waiter_v1_newcomer_pair(server, unique):
    name = unique()
    a = await v2(server.port, name)
    assert (await a.read_v2()).status is Status.WAITING
    b = await v1(server.port, name)
    assert await b.read_rest() == pack_endpoint(*a.local)
    paired = await a.read_v2()
    assert paired.status is Status.PAIRED and paired.peer == b.local
    await a.close()
    await b.close()


async def test_utf8_names_pair_across_protocols(server, unique):
    name = unique("größe")
    a = await v1(server.port, name.encode("utf-8"))
    await wait_for(lambda: len(server.room) == 1)
    b = await v2(server.port, name)
    assert (await b.read_v2()).status is Status.PAIRED
    await a.close()
    await b.close()


async def test_dead_waiter_is_purged_at_once(server, unique):
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    await a.close()
    await wait_for(lambda: len(server.room) == 0)
    b = await v1(server.port, name)
    assert await b.silent_for(0.2), "the newcomer was paired with a dead endpoint"
    assert server.room.waiter(name.encode()).endpoint == b.local
    await b.close()


async def test_reset_waiter_is_purged(server, unique):
    name = unique()
    a = await v2(server.port, name)
    await a.read_v2()
    sock = a.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    a.writer.transport.abort()  # RST instead of FIN
    await wait_for(lambda: len(server.room) == 0)
    b = await v2(server.port, name)
    assert (await b.read_v2()).status is Status.WAITING
    await b.close()


async def test_v2_expiry_sends_timeout_then_closes(make_server, unique):
    server = await make_server(peer_timeout=0.3)
    a = await v2(server.port, unique())
    waiting = await a.read_v2()
    timeout = await a.read_v2(timeout=3)
    assert timeout.status is Status.TIMEOUT and timeout.token == waiting.token
    assert await a.read_rest() == b""
    assert len(server.room) == 0
    assert server.metrics.expired == 1
    await a.close()


async def test_v1_expiry_closes_after_v1_timeout(make_server, unique):
    server = await make_server(peer_timeout=0.2, v1_peer_timeout=0.6)
    a = await v1(server.port, unique())
    assert await a.silent_for(0.35), "v1 waiters must outlast the v2 peer timeout"
    assert await a.read_rest(timeout=3) == b""
    assert len(server.room) == 0
    await a.close()


async def test_token_resumes_after_timeout_and_pairs(make_server, unique):
    server = await make_server(peer_timeout=0.3)
    name = unique()
    a = await v2(server.port, name)
    token = (await a.read_v2()).token
    assert (await a.read_v2(timeout=3)).status is Status.TIMEOUT
    await a.close()
    a2 = await v2(server.port, name, token)
    resumed = await a2.read_v2()
    assert resumed.status is Status.WAITING and resumed.token == token
    b = await v2(server.port, name)
    assert (await b.read_v2()).peer == a2.local
    assert (await a2.read_v2()).status is Status.PAIRED
    await a2.close()
    await b.close()


async def test_token_stays_valid_one_more_peer_timeout(make_server, unique):
    server = await make_server(peer_timeout=0.3)
    name = unique()
    a = await v2(server.port, name)
    token = (await a.read_v2()).token
    assert (await a.read_v2(timeout=3)).status is Status.TIMEOUT
    await a.close()
    await asyncio.sleep(0.2)  # within one more peer timeout
    a2 = await v2(server.port, name, token)
    assert (await a2.read_v2()).status is Status.WAITING
    await a2.close()


async def test_expired_token_gets_error(make_server, unique):
    server = await make_server(peer_timeout=0.2)
    name = unique()
    a = await v2(server.port, name)
    token = (await a.read_v2()).token
    assert (await a.read_v2(timeout=3)).status is Status.TIMEOUT
    await a.close()
    await asyncio.sleep(0.5)  # past the grace of one more peer timeout
    a2 = await v2(server.port, name, token)
    assert (await a2.read_v2()).status is Status.ERROR
    assert await a2.read_rest() == b""
    await a2.close()


async def test_unknown_token_gets_error(server, unique):
    a = await v2(server.port, unique(), "12345678-1234-4234-8234-123456789abc")
    assert (await a.read_v2()).status is Status.ERROR
    assert await a.read_rest() == b""
    assert server.metrics.rejected.get("bad_token", 0) == 1
    await a.close()


async def test_token_reconnect_replaces_old_waiting_connection(server, unique):
    name = unique()
    a = await v2(server.port, name)
    token = (await a.read_v2()).token
    a2 = await v2(server.port, name, token)
    assert (await a2.read_v2()).status is Status.WAITING
    assert await a.read_rest() == b"", "the replaced connection is closed"
    assert len(server.room) == 1
    b = await v1(server.port, name)
    assert await b.read_rest() == pack_endpoint(*a2.local)
    await a.close()
    await a2.close()
    await b.close()


async def test_token_of_a_paired_waiter_is_spent(server, unique):
    name = unique()
    a = await v2(server.port, name)
    token = (await a.read_v2()).token
    b = await v2(server.port, name)
    await b.read_v2()
    await a.read_v2()
    c = await v2(server.port, name, token)
    assert (await c.read_v2()).status is Status.ERROR
    for client in (a, b, c):
        await client.close()


async def test_remove_pair_command(server, unique):
    name = unique()
    a = await v1(server.port, name)
    await wait_for(lambda: len(server.room) == 1)
    cmd = await connect(server.port, f"remove_pair_{name}".encode())
    assert await cmd.read_rest() == b""
    assert await a.read_rest() == b"", "the removed waiter is closed"
    assert len(server.room) == 0
    await a.close()
    await cmd.close()


async def test_delete_pairs_is_off_by_default(server, unique):
    a = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 1)
    cmd = await connect(server.port, b"delete_pairs")
    assert await cmd.read_rest() == b""
    assert len(server.room) == 1
    assert server.metrics.rejected.get("delete_pairs_disabled", 0) == 1
    await a.close()
    await cmd.close()


async def test_delete_pairs_with_flag_clears_room(make_server, unique):
    server = await make_server(allow_delete_pairs=True)
    a = await v1(server.port, unique())
    b = await v2(server.port, unique())
    await b.read_v2()
    await wait_for(lambda: len(server.room) == 2)
    cmd = await connect(server.port, b"delete_pairs")
    assert await cmd.read_rest() == b""
    assert len(server.room) == 0
    assert await a.read_rest() == b""
    assert (await b.read_v2()).status is Status.ERROR
    for client in (a, b, cmd):
        await client.close()


async def test_name_pattern_refuses_other_names(make_server, unique):
    server = await make_server(name_pattern=r".*pair.*")
    bad = await connect(server.port, b"someone_else")
    assert await bad.read_rest() == b""
    bad2 = await v2(server.port, "nothing_here")
    assert (await bad2.read_v2()).status is Status.ERROR
    good = await v1(server.port, unique("fmi_pair"))
    assert await good.silent_for(0.1)
    assert server.metrics.rejected.get("name_pattern", 0) == 2
    for client in (bad, bad2, good):
        await client.close()


async def test_accepted_sockets_have_tcp_keepalive(server, unique):
    a = await v1(server.port, unique())
    await wait_for(lambda: len(server.room) == 1)
    (conn,) = server.connections
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
    await a.close()


async def test_many_names_pair_independently(server, unique):
    names = [unique() for _ in range(50)]
    firsts = [await v1(server.port, n) for n in names]
    await wait_for(lambda: len(server.room) == 50)
    seconds = await asyncio.gather(*(v2(server.port, n) for n in names))
    for first, second in zip(firsts, seconds, strict=True):
        assert (await second.read_v2()).peer == first.local
        assert await first.read_rest() == pack_endpoint(*second.local)
        await first.close()
        await second.close()
    assert server.pairings == 50 and len(server.room) == 0

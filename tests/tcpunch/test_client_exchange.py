"""Byte vectors for the client exchange: every transition of both tables, every split."""

from __future__ import annotations

import pytest

from tcpunch import (
    ClientExchange,
    ClientState,
    Endpoint,
    LocalProtocolError,
    OwnEndpoint,
    Paired,
    Reason,
    RemoteProtocolError,
    ServerClosed,
    ServerError,
    Status,
    TimedOut,
    V1Request,
    V2Request,
    V2Response,
    Waiting,
    encode_v2_request,
    encode_v2_response,
    pack_endpoint,
)
from tcpunch.client_state import RESUMABLE, V1_TRANSITIONS, V2_TRANSITIONS, Trigger

TOKEN = "0f0e0d0c-0b0a-4908-8706-050403020100"
OTHER_TOKEN = "11111111-2222-4333-8444-555555555555"
YOU = Endpoint("198.18.0.1", 40000)
PEER = Endpoint("198.18.0.2", 40001)
ZERO = Endpoint("0.0.0.0", 0)

OWN_V1 = bytes([198, 18, 0, 1, 0x9C, 0x40, 0, 0])  # YOU as the v1 server sends it
PEER_V1 = bytes([198, 18, 0, 2, 0x9C, 0x41, 0, 0])


def v2(status: Status, token: str = "", peer: Endpoint = ZERO) -> bytes:
    return encode_v2_response(V2Response(status, YOU, peer, token))


def v1_exchange(name: bytes = b"fmi_pair0_1") -> ClientExchange:
    exchange = ClientExchange(V1Request(name))
    assert exchange.start() == name
    return exchange


def v2_exchange(name: str = "fmi_pair0_1", token: str = "") -> ClientExchange:
    exchange = ClientExchange(V2Request(name, token))
    assert exchange.start() == encode_v2_request(name, token)
    return exchange


def test_the_vectors_are_what_the_server_packs() -> None:
    assert pack_endpoint(*YOU) == OWN_V1 and pack_endpoint(*PEER) == PEER_V1


# -- v1 --------------------------------------------------------------------------------


def test_v1_own_endpoint_then_peer() -> None:
    exchange = v1_exchange()
    assert exchange.protocol == "v1" and exchange.state is ClientState.AWAIT_ENDPOINT
    assert exchange.receive_data(OWN_V1) == [OwnEndpoint(YOU)]
    assert exchange.state is ClientState.AWAIT_PEER and exchange.you == YOU
    assert exchange.receive_data(PEER_V1) == [Paired(YOU, PEER)]
    assert exchange.state is ClientState.PAIRED and not exchange.resumable
    assert exchange.receive_eof() == ServerClosed(0, 0, 2, False)  # the server's close
    assert exchange.state is ClientState.PAIRED


def test_v1_sixteen_bytes_in_one_read() -> None:
    assert v1_exchange().receive_data(OWN_V1 + PEER_V1) == [OwnEndpoint(YOU), Paired(YOU, PEER)]


def test_v1_server_ends_the_wait_then_rejoin() -> None:
    exchange = v1_exchange(b"rejoin-me")
    exchange.receive_data(OWN_V1)
    closed = exchange.receive_eof()
    assert closed == ServerClosed(received=0, expected=8, replies=1, resumable=True)
    assert exchange.state is ClientState.WAIT_ENDED and exchange.resumable
    assert exchange.resume() == b"rejoin-me"  # the same name on a new connection
    assert exchange.state is ClientState.AWAIT_ENDPOINT
    assert exchange.receive_data(OWN_V1 + PEER_V1)[-1] == Paired(YOU, PEER)


def test_v1_close_before_any_byte_is_final() -> None:
    exchange = v1_exchange()
    assert exchange.receive_eof() == ServerClosed(0, 8, 0, False)
    assert exchange.state is ClientState.CLOSED
    with pytest.raises(LocalProtocolError) as info:
        exchange.resume()
    assert info.value.reason is Reason.OUT_OF_ORDER


def test_v1_close_mid_own_endpoint() -> None:
    exchange = v1_exchange()
    assert exchange.receive_data(OWN_V1[:3]) == []
    assert exchange.receive_eof() == ServerClosed(3, 8, 0, False)
    assert exchange.state is ClientState.CLOSED


def test_v1_close_mid_peer_endpoint_is_not_a_rejoin() -> None:
    exchange = v1_exchange()
    assert exchange.receive_data(OWN_V1 + b"abc") == [OwnEndpoint(YOU)]
    assert exchange.receive_eof() == ServerClosed(3, 8, 1, False)
    assert exchange.state is ClientState.CLOSED and not exchange.resumable


@pytest.mark.parametrize(
    ("reply", "reason", "says"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", Reason.HTTP_REPLY, "HTTP"),
        (pack_endpoint("127.0.0.1", 0), Reason.BAD_ENDPOINT, "our own endpoint 127.0.0.1:0"),
        (OWN_V1 + pack_endpoint("0.0.0.0", 5), Reason.BAD_ENDPOINT, "peer endpoint 0.0.0.0:5"),
        (OWN_V1 + pack_endpoint("1.2.3.4", 0), Reason.BAD_ENDPOINT, "peer endpoint 1.2.3.4:0"),
        (OWN_V1 + PEER_V1 + b"x", Reason.TRAILING_BYTES, "more than two 8-byte endpoints"),
    ],
    ids=["http", "own-port-0", "peer-ip-0", "peer-port-0", "trailing"],
)
def test_v1_bad_replies(reply: bytes, reason: Reason, says: str) -> None:
    exchange = v1_exchange()
    with pytest.raises(RemoteProtocolError) as info:
        exchange.receive_data(reply)
    assert info.value.reason is reason and says in str(info.value)
    assert exchange.state is ClientState.FAILED
    with pytest.raises(LocalProtocolError):  # after bad bytes, nothing more is taken
        exchange.receive_data(b"")


def test_v1_trailing_byte_in_a_later_read() -> None:
    exchange = v1_exchange()
    exchange.receive_data(OWN_V1 + PEER_V1)
    with pytest.raises(RemoteProtocolError) as info:
        exchange.receive_data(b"\0")
    assert info.value.reason is Reason.TRAILING_BYTES


# -- v2 --------------------------------------------------------------------------------


def test_v2_waiting_then_paired() -> None:
    exchange = v2_exchange()
    assert exchange.protocol == "v2" and exchange.state is ClientState.AWAIT_RESPONSE
    assert exchange.receive_data(v2(Status.WAITING, TOKEN)) == [Waiting(YOU, TOKEN)]
    assert exchange.token == TOKEN and exchange.you == YOU
    assert exchange.receive_data(v2(Status.PAIRED, TOKEN, PEER)) == [Paired(YOU, PEER, TOKEN)]
    assert exchange.state is ClientState.PAIRED


def test_v2_paired_at_once() -> None:
    exchange = v2_exchange()
    assert exchange.receive_data(v2(Status.PAIRED, TOKEN, PEER)) == [Paired(YOU, PEER, TOKEN)]
    assert exchange.receive_eof() == ServerClosed(0, 0, 1, False)


def test_v2_waiting_without_a_token_keeps_none() -> None:
    exchange = v2_exchange()
    assert exchange.receive_data(v2(Status.WAITING)) == [Waiting(YOU)]
    assert exchange.token == ""


def test_v2_timeout_then_resume_with_the_token() -> None:
    exchange = v2_exchange("resume-me")
    events = exchange.receive_data(v2(Status.WAITING, TOKEN) + v2(Status.TIMEOUT, TOKEN))
    assert events == [Waiting(YOU, TOKEN), TimedOut(YOU, TOKEN)]
    assert exchange.state is ClientState.TIMED_OUT and exchange.resumable
    assert exchange.receive_eof() == ServerClosed(0, 0, 2, True)  # the close after TIMEOUT
    resume = exchange.resume()
    assert resume == encode_v2_request("resume-me", TOKEN)
    assert resume[100:136] == TOKEN.encode()
    assert exchange.receive_data(v2(Status.PAIRED, TOKEN, PEER)) == [Paired(YOU, PEER, TOKEN)]


def test_v2_timeout_without_any_token_resumes_fresh() -> None:
    exchange = v2_exchange("fresh")
    assert exchange.receive_data(v2(Status.TIMEOUT)) == [TimedOut(YOU)]
    assert exchange.resume() == encode_v2_request("fresh")


def test_v2_a_later_token_replaces_the_earlier() -> None:
    exchange = v2_exchange(token=TOKEN)
    exchange.receive_data(v2(Status.WAITING, OTHER_TOKEN) + v2(Status.TIMEOUT))
    assert exchange.token == OTHER_TOKEN  # TIMEOUT without a token keeps the one known
    assert exchange.resume()[100:136] == OTHER_TOKEN.encode()


def test_v2_error_to_a_fresh_request_is_final() -> None:
    exchange = v2_exchange()
    assert exchange.receive_data(v2(Status.ERROR)) == [ServerError(resumable=False)]
    assert exchange.state is ClientState.REFUSED
    with pytest.raises(LocalProtocolError):
        exchange.resume()


def test_v2_error_to_a_known_token_starts_over_without_it() -> None:
    exchange = v2_exchange("stale")
    exchange.receive_data(v2(Status.TIMEOUT, TOKEN))
    assert exchange.resume() == encode_v2_request("stale", TOKEN)
    assert exchange.receive_data(v2(Status.ERROR)) == [ServerError(resumable=True)]
    assert exchange.state is ClientState.TOKEN_REFUSED and exchange.token == ""
    assert exchange.resume() == encode_v2_request("stale")  # fresh: the token is dropped
    assert exchange.receive_data(v2(Status.ERROR)) == [ServerError(resumable=False)]


def test_v2_error_to_a_request_that_started_with_a_token() -> None:
    exchange = v2_exchange(token=TOKEN)
    assert exchange.receive_data(v2(Status.ERROR)) == [ServerError(resumable=True)]


def test_v2_close_while_a_token_is_known_resumes_with_it() -> None:
    exchange = v2_exchange("flaky")
    exchange.receive_data(v2(Status.WAITING, TOKEN) + b"\1\2\3")
    assert exchange.receive_eof() == ServerClosed(3, 51, 1, True)
    assert exchange.state is ClientState.DISCONNECTED
    assert exchange.resume() == encode_v2_request("flaky", TOKEN)


@pytest.mark.parametrize(
    ("before", "closed"),
    [
        (b"", ServerClosed(0, 51, 0, False)),  # how a server refuses
        (b"\0" * 20, ServerClosed(20, 51, 0, False)),  # EOF mid-reply
        (v2(Status.WAITING), ServerClosed(0, 51, 1, False)),  # answered, no token
    ],
    ids=["at-once", "mid-reply", "after-tokenless-waiting"],
)
def test_v2_close_without_a_token_is_final(before: bytes, closed: ServerClosed) -> None:
    exchange = v2_exchange()
    exchange.receive_data(before)
    assert exchange.receive_eof() == closed
    assert exchange.state is ClientState.CLOSED


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (bytes([4]) + v2(Status.WAITING)[1:], Reason.UNKNOWN_STATUS),
        (bytes([0xFF]) + v2(Status.WAITING)[1:], Reason.UNKNOWN_STATUS),
        (b"HTTP/1.1 200 OK\r\n".ljust(51, b"x"), Reason.HTTP_REPLY),
        (v2(Status.WAITING)[:13] + b"t" * 38, Reason.NOT_TERMINATED),
        (v2(Status.WAITING)[:13] + b"nope\0".ljust(38, b"\0"), Reason.BAD_TOKEN),
        (v2(Status.PAIRED, TOKEN, PEER) + b"\0", Reason.TRAILING_BYTES),
        (v2(Status.TIMEOUT) + v2(Status.WAITING), Reason.TRAILING_BYTES),
        (v2(Status.ERROR) + b"x", Reason.TRAILING_BYTES),
    ],
    ids=[
        "status-4",
        "status-255",
        "http",
        "token-unterminated",
        "token-not-uuid",
        "after-paired",
        "after-timeout",
        "after-error",
    ],
)
def test_v2_bad_replies(reply: bytes, reason: Reason) -> None:
    exchange = v2_exchange()
    with pytest.raises(RemoteProtocolError) as info:
        exchange.receive_data(reply)
    assert info.value.reason is reason
    assert exchange.state is ClientState.FAILED


# -- every split -----------------------------------------------------------------------

CONVERSATIONS = [
    ("v1", OWN_V1 + PEER_V1, [OwnEndpoint(YOU), Paired(YOU, PEER)]),
    (
        "v2",
        v2(Status.WAITING, TOKEN) + v2(Status.PAIRED, TOKEN, PEER),
        [Waiting(YOU, TOKEN), Paired(YOU, PEER, TOKEN)],
    ),
    (
        "v2",
        v2(Status.WAITING, TOKEN) + v2(Status.TIMEOUT),
        [Waiting(YOU, TOKEN), TimedOut(YOU, TOKEN)],
    ),
]


def fresh(protocol: str) -> ClientExchange:
    return v1_exchange() if protocol == "v1" else v2_exchange()


@pytest.mark.parametrize(("protocol", "wire", "expected"), CONVERSATIONS)
def test_bytes_split_at_every_offset(protocol: str, wire: bytes, expected: list[object]) -> None:
    for cut in range(len(wire) + 1):
        exchange = fresh(protocol)
        events = exchange.receive_data(wire[:cut]) + exchange.receive_data(wire[cut:])
        assert events == expected, cut
    for first in range(1, len(wire)):  # and three pieces, cut at every pair of offsets
        for second in range(first, len(wire), 7):
            exchange = fresh(protocol)
            events = [
                event
                for piece in (wire[:first], wire[first:second], wire[second:])
                for event in exchange.receive_data(piece)
            ]
            assert events == expected, (first, second)


@pytest.mark.parametrize(("protocol", "wire", "expected"), CONVERSATIONS)
def test_bytes_one_at_a_time(protocol: str, wire: bytes, expected: list[object]) -> None:
    exchange = fresh(protocol)
    assert [
        event for i in range(len(wire)) for event in exchange.receive_data(wire[i : i + 1])
    ] == expected


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_eof_at_every_offset_reports_the_bytes_of_the_partial_reply(protocol: str) -> None:
    wire, size = (OWN_V1 + PEER_V1, 8) if protocol == "v1" else (v2(Status.WAITING) * 2, 51)
    for cut in range(len(wire)):
        exchange = fresh(protocol)
        exchange.receive_data(wire[:cut])
        closed = exchange.receive_eof()
        assert (closed.received, closed.expected, closed.replies) == (cut % size, size, cut // size)


# -- misuse and the tables -------------------------------------------------------------


def test_calls_out_of_order_are_local_errors() -> None:
    exchange = ClientExchange(V1Request(b"x"))
    for call in (lambda: exchange.receive_data(b"x"), exchange.receive_eof, exchange.resume):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.reason is Reason.OUT_OF_ORDER
    exchange.start()
    with pytest.raises(LocalProtocolError, match="cannot send"):
        exchange.start()
    exchange.receive_eof()
    with pytest.raises(LocalProtocolError, match="receive EOF"):
        exchange.receive_eof()


def test_only_requests_make_an_exchange() -> None:
    with pytest.raises(LocalProtocolError) as info:
        ClientExchange("fmi_pair0_1")  # type: ignore[arg-type]
    assert info.value.reason is Reason.WRONG_TYPE


def test_empty_data_is_no_event() -> None:
    assert v2_exchange().receive_data(b"") == []


@pytest.mark.parametrize("table", [V1_TRANSITIONS, V2_TRANSITIONS], ids=["v1", "v2"])
def test_every_state_a_table_leads_to_is_in_it(table) -> None:
    for transitions in table.values():
        for target in transitions.values():
            assert target in table
    assert ClientState.IDLE in table and ClientState.FAILED in table and ClientState.PAIRED in table


@pytest.mark.parametrize("table", [V1_TRANSITIONS, V2_TRANSITIONS], ids=["v1", "v2"])
def test_resumable_states_are_exactly_those_with_a_resume(table) -> None:
    for state, transitions in table.items():
        assert (Trigger.RESUME in transitions) == (state in RESUMABLE)
        if state in RESUMABLE:  # and a resume always leads to awaiting the server again
            awaiting = (ClientState.AWAIT_ENDPOINT, ClientState.AWAIT_RESPONSE)
            assert transitions[Trigger.RESUME] in awaiting

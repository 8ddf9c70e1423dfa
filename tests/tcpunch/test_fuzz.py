"""Property tests of the codecs: parse or raise the remote error, never anything else;
what is encoded decodes back. Settings: the ``tcpunch-ci`` profile (conftest.py)."""

from __future__ import annotations

import dataclasses
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpunch import (
    ClientExchange,
    ClientState,
    Command,
    Endpoint,
    NeedMoreData,
    OwnEndpoint,
    Paired,
    RemoteProtocolError,
    RequestReader,
    ServerClosed,
    ServerError,
    Status,
    TimedOut,
    V1Request,
    V2Request,
    V2Response,
    Waiting,
    decode_v2_request,
    decode_v2_response,
    encode_v1_name,
    encode_v2_request,
    encode_v2_response,
    pack_endpoint,
    unpack_endpoint,
)
from tcpunch.v2credential import FLAG_CREDENTIAL, MAX_TRAILER_CREDENTIAL, encode_trailer

FUZZ = settings.get_profile(os.environ.get("TCPUNCH_FUZZ", "tcpunch-ci"))
EVENTS = (OwnEndpoint, Waiting, Paired, TimedOut, ServerError, ServerClosed)

# -- strategies ------------------------------------------------------------------------

ips = st.ip_addresses(v=4).map(str)
ports = st.integers(0, 0xFFFF)
endpoints = st.builds(Endpoint, ips, ports)
tokens = st.one_of(st.just(""), st.uuids().map(str))
flags = st.integers(0, 2**32 - 1)
v1_names = st.lists(st.integers(1, 255), min_size=1, max_size=100).map(bytes)
v2_names = st.text(min_size=1, max_size=99).filter(
    lambda name: "\0" not in name and len(name.encode("utf-8")) <= 99
)
credentials = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)
credentials = credentials.filter(lambda c: len(c.encode("utf-8")) <= MAX_TRAILER_CREDENTIAL)
v2_requests = st.builds(V2Request, v2_names, tokens, flags)
#: Requests with a credential trailer (flag bit 0 set, then length:u16 and the UTF-8 text).
credentialed_requests = st.builds(V2Request, v2_names, tokens, flags, credentials)
v2_responses = st.builds(V2Response, st.sampled_from(Status), endpoints, endpoints, tokens)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` bytes, sometimes with a byte changed, a cut, or bytes added."""
    wire = draw(base)
    how = draw(st.sampled_from(["keep", "flip", "cut", "extend"]))
    if how == "flip" and wire:
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([draw(st.integers(0, 255))]) + wire[at + 1 :]
    elif how == "cut":
        wire = wire[: draw(st.integers(0, len(wire)))]
    elif how == "extend":
        wire += draw(st.binary(min_size=1, max_size=60))
    return wire


@st.composite
def split(draw: st.DrawFn, wire: bytes) -> list[bytes]:
    """``wire`` cut into pieces at arbitrary offsets (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


v2_shaped = st.builds(  # a NUL in the first 100 bytes, then anything: the v2 path
    lambda name, rest: (name + b"\0").ljust(100, b"\0")[:100] + rest,
    st.binary(max_size=99),
    st.binary(max_size=60),
)


@st.composite
def announced_trailers(draw: st.DrawFn) -> bytes:
    """A v2 request with flag bit 0, then a trailer whose length field may lie: 0, the
    truth, a little off, or over the bound, with any bytes (UTF-8 or not) after it."""
    head = encode_v2_request(draw(v2_names), draw(tokens), draw(flags) | FLAG_CREDENTIAL)
    body = draw(st.binary(max_size=80))
    length = draw(
        st.one_of(
            st.sampled_from([0, len(body), len(body) + 1, MAX_TRAILER_CREDENTIAL + 1, 0xFFFF]),
            st.integers(0, 0xFFFF),
        )
    )
    return head + length.to_bytes(2, "big") + body


@st.composite
def nul_somewhere(draw: st.DrawFn) -> bytes:
    """A first NUL at any offset around the v1/v2 boundary (100) and lengths around 141."""
    at = draw(st.one_of(st.sampled_from([0, 98, 99, 100]), st.integers(0, 120)))
    tail = draw(st.one_of(st.sampled_from([0, 40, 41, 42]), st.integers(0, 60)))
    fill = draw(st.sampled_from([b"n", b"\xff", b"\x7f"]))
    return fill * at + b"\0" + fill * tail


request_bytes = st.one_of(
    st.binary(max_size=300),
    nul_somewhere(),
    mutated(v2_requests.map(V2Request.encode)),
    mutated(credentialed_requests.map(V2Request.encode)),
    announced_trailers(),
    mutated(v2_shaped),
    mutated(v1_names),
    mutated(st.sampled_from([b"delete_pairs", b"remove_pair_", b"remove_pair_x"])),
)

v1_server_bytes = st.one_of(
    st.binary(max_size=40),
    mutated(st.lists(st.builds(pack_endpoint, ips, ports), max_size=3).map(b"".join)),
    st.just(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
)
v2_server_bytes = st.one_of(
    st.binary(max_size=160),
    mutated(st.lists(v2_responses.map(encode_v2_response), max_size=3).map(b"".join)),
    st.lists(  # 51-byte blocks with plausible and implausible status bytes
        st.tuples(st.integers(0, 5), st.binary(min_size=50, max_size=50)).map(
            lambda t: bytes([t[0]]) + t[1]
        ),
        max_size=3,
    ).map(b"".join),
)


def rebuilt(value: object) -> object:
    """``value`` built again through its checked constructor."""
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return type(value)(**fields)


# -- (a) the server's request reader ---------------------------------------------------


@FUZZ
@given(st.data())
def test_reader_returns_a_valid_request_or_raises_the_remote_error(data: st.DataObject) -> None:
    wire = data.draw(request_bytes)
    reader = RequestReader()
    for chunk in data.draw(split(wire)):
        try:
            result = reader.feed(chunk)
        except RemoteProtocolError:
            return
        if result is NeedMoreData:
            assert not reader.done
            continue
        assert isinstance(result, V1Request | V2Request | Command)
        assert rebuilt(result) == result  # the reader's fast path built a valid object
    if not reader.done:
        assert isinstance(reader.eof(), RemoteProtocolError)


# -- (b) the client exchange -----------------------------------------------------------


@st.composite
def client_requests(draw: st.DrawFn) -> V1Request | V2Request:
    if draw(st.booleans()):
        return V1Request(draw(v1_names))
    return V2Request(draw(v2_names), draw(tokens), credential=draw(st.none() | credentials))


def run_connection(exchange: ClientExchange, chunks: list[bytes], eof: bool) -> list[object]:
    """Feed one connection's bytes (and its close); the events, or the error's reason."""
    events: list[object] = []
    try:
        for chunk in chunks:
            events += exchange.receive_data(chunk)
        if eof:
            events.append(exchange.receive_eof())
    except RemoteProtocolError as exc:
        assert exchange.state is ClientState.FAILED
        events.append(exc.reason)
    return events


@FUZZ
@given(client_requests(), st.data())
def test_client_exchange_gives_events_or_raises_the_remote_error(
    request: V1Request | V2Request, data: st.DataObject
) -> None:
    exchange = ClientExchange(request)
    sent = exchange.start()
    server_bytes = v1_server_bytes if isinstance(request, V1Request) else v2_server_bytes
    for _connection in range(data.draw(st.integers(1, 4))):
        assert sent  # every request or resume is non-empty bytes a server can read
        if isinstance(request, V2Request):  # what the server reads: name and credential
            read = RequestReader().feed(sent)
            assert isinstance(read, V2Request) and read.name == request.name
            assert read.credential == request.credential
        wire = data.draw(server_bytes)
        events = run_connection(exchange, data.draw(split(wire)), data.draw(st.booleans()))
        for event in events:
            if not isinstance(event, EVENTS):  # the error's reason: the exchange is over
                return
            assert rebuilt(event) == event
        if not exchange.resumable:
            return
        sent = exchange.resume()


@FUZZ
@given(client_requests(), st.data())
def test_client_exchange_does_not_care_how_bytes_are_split(
    request: V1Request | V2Request, data: st.DataObject
) -> None:
    wire = data.draw(v1_server_bytes if isinstance(request, V1Request) else v2_server_bytes)
    eof = data.draw(st.booleans())
    whole, pieces = ClientExchange(request), ClientExchange(request)
    whole.start(), pieces.start()
    at_once = run_connection(whole, [wire], eof)
    piecewise = run_connection(pieces, data.draw(split(wire)), eof)
    assert pieces.state is whole.state and pieces.token == whole.token
    if at_once and not isinstance(at_once[-1], EVENTS):
        # The same error; events completed in the read that raised it are not returned,
        # so a read of everything at once reports no more events than pieces do.
        assert piecewise[-1] == at_once[-1]
        assert piecewise[: len(at_once) - 1] == at_once[:-1]
    else:
        assert piecewise == at_once


# -- (c) round trips -------------------------------------------------------------------


@FUZZ
@given(ips, ports)
def test_endpoint_round_trip(ip: str, port: int) -> None:
    assert unpack_endpoint(pack_endpoint(ip, port)) == Endpoint(ip, port)


@FUZZ
@given(v1_names)
def test_v1_name_round_trip(raw: bytes) -> None:
    assert encode_v1_name(raw) == raw
    assert ClientExchange(V1Request(raw)).start() == raw
    if raw != b"delete_pairs" and not raw.startswith(b"remove_pair_"):  # commands, not names
        assert RequestReader().feed(raw) == V1Request(raw)


@FUZZ
@given(v2_requests)
def test_v2_request_round_trip(request: V2Request) -> None:
    wire = encode_v2_request(request.name, request.token, request.flags)
    assert wire == request.encode() and len(wire) == 141
    assert decode_v2_request(wire) == request
    if request.flags & FLAG_CREDENTIAL:
        # Bit 0 announces a credential trailer (no client of the fork sets it): the
        # reader waits for the trailer, and an end of stream there is the remote's error.
        reader = RequestReader()
        assert reader.feed(wire) is NeedMoreData
        assert isinstance(reader.eof(), RemoteProtocolError)
    else:
        assert RequestReader().feed(wire) == request


@FUZZ
@given(credentialed_requests, st.data())
def test_credentialed_request_round_trip_however_split(
    request: V2Request, data: st.DataObject
) -> None:
    assert request.flags & FLAG_CREDENTIAL and request.credential is not None
    wire = encode_v2_request(request.name, request.token, request.flags, request.credential)
    assert wire == request.encode()
    assert wire[141:] == encode_trailer(request.credential)
    assert decode_v2_request(wire[:141]) == V2Request(request.name, request.token, request.flags)
    reader = RequestReader()
    # As for every v2 request, the first read holds the name's NUL (without one it is v1).
    head = len(request.name.encode("utf-8")) + 1
    chunks = data.draw(split(wire[head:]))
    chunks[0] = wire[:head] + chunks[0]
    result: object = NeedMoreData
    while result is NeedMoreData:
        result = reader.feed(chunks.pop(0))
    assert not b"".join(chunks)  # complete exactly with the trailer's last byte
    assert isinstance(result, V2Request) and reader.done
    assert result == request and result.credential == request.credential
    # The credential is a bearer token: the repr is that of the request without it.
    assert repr(result) == repr(dataclasses.replace(request, credential=None))


@FUZZ
@given(v2_responses)
def test_v2_response_round_trip(response: V2Response) -> None:
    assert decode_v2_response(encode_v2_response(response)) == response


@FUZZ
@given(
    v2_names,
    st.lists(st.tuples(endpoints, tokens), max_size=3),
    st.sampled_from([Status.PAIRED, Status.TIMEOUT]),
    endpoints,
    endpoints,
    tokens,
)
def test_v2_responses_round_trip_through_the_client_exchange(
    name: str,
    waits: list[tuple[Endpoint, str]],
    last: Status,
    you: Endpoint,
    peer: Endpoint,
    token: str,
) -> None:
    """What a server encodes, the client exchange reports, tokens carried forward."""
    wire = b"".join(encode_v2_response(V2Response(Status.WAITING, e, token=t)) for e, t in waits)
    wire += encode_v2_response(V2Response(last, you, peer, token))
    exchange = ClientExchange(V2Request(name))
    exchange.start()
    events = exchange.receive_data(wire)
    known = ""
    for (endpoint, wait_token), event in zip(waits, events, strict=False):
        known = wait_token or known
        assert event == Waiting(endpoint, known)
    known = token or known
    expected = Paired(you, peer, known) if last is Status.PAIRED else TimedOut(you, known)
    assert events[len(waits) :] == [expected]

"""NAT hints on the v2 wire: flag bits 1-3 of the request, byte 50 of PAIRED.

Byte vectors pin the bytes; property tests check that any byte 50 parses or raises the
remote error, that hints round-trip, and that a requester without bit 1 (every deployed
client) gets exactly the bytes it got before hints existed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpunch import (
    ClientExchange,
    Endpoint,
    LocalProtocolError,
    NatClass,
    Paired,
    Reason,
    RemoteProtocolError,
    RequestReader,
    Status,
    V2Request,
    V2Response,
    decode_v2_response,
    encode_v2_request,
    encode_v2_response,
    hint_flags,
)
from tcpunch.nathint import (
    FLAG_READS_HINTS,
    HINT_MARK,
    decode_hint,
    flags_nat,
    hint_for,
    reads_hints,
)
from tests.tcpunch.test_fuzz import FUZZ, endpoints, flags, tokens, v2_names

TOKEN = "0f8fad5b-d9cb-469f-a165-70867728950e"
YOU = Endpoint("198.18.0.2", 40000)
PEER = Endpoint("198.18.0.3", 50000)
PAIRED_HEAD = (
    b"\x01"  # PAIRED
    + bytes([198, 18, 0, 2]) + (40000).to_bytes(2, "big")
    + bytes([198, 18, 0, 3]) + (50000).to_bytes(2, "big")
    + TOKEN.encode().ljust(37, b"\0")
)  # fmt: skip


@pytest.mark.parametrize(
    ("nat", "wire_flags"),
    [
        (NatClass.UNKNOWN, b"\x00\x00\x00\x02"),
        (NatClass.ENDPOINT_INDEPENDENT, b"\x00\x00\x00\x06"),
        (NatClass.PORT_DEPENDENT, b"\x00\x00\x00\x0a"),
        (NatClass.NO_INBOUND, b"\x00\x00\x00\x0e"),
    ],
)
def test_request_flags_byte_vectors(nat: NatClass, wire_flags: bytes) -> None:
    wire = encode_v2_request("fmi_pair0_1", flags=hint_flags(nat))
    assert wire == b"fmi_pair0_1".ljust(100, b"\0") + b"\0" * 37 + wire_flags
    request = RequestReader().feed(wire)
    assert isinstance(request, V2Request)
    assert request.reads_hints and request.nat is nat


def test_hint_flags_beside_a_credential() -> None:
    wire = V2Request("job/a", flags=hint_flags(NatClass.PORT_DEPENDENT), credential="c").encode()
    assert wire[137:141] == b"\x00\x00\x00\x0b"  # credential (bit 0) + hints + class 2
    assert wire[141:] == b"\x00\x01c"
    request = RequestReader().feed(wire)
    assert isinstance(request, V2Request)
    assert request.credential == "c" and request.nat is NatClass.PORT_DEPENDENT


@pytest.mark.parametrize(
    ("peer_nat", "byte50"),
    [
        (None, 0x00),
        (NatClass.UNKNOWN, 0x10),
        (NatClass.ENDPOINT_INDEPENDENT, 0x11),
        (NatClass.PORT_DEPENDENT, 0x12),
        (NatClass.NO_INBOUND, 0x13),
    ],
)
def test_paired_response_byte_vectors(peer_nat: NatClass | None, byte50: int) -> None:
    response = V2Response(Status.PAIRED, YOU, PEER, TOKEN, peer_nat)
    wire = encode_v2_response(response)
    assert wire == PAIRED_HEAD + bytes([byte50])
    assert decode_v2_response(wire) == response


def test_a_requester_without_bit_1_gets_todays_bytes() -> None:
    """Whatever its peer reported, a requester that did not ask gets byte 50 zero."""
    for peer_flags in (0, hint_flags(NatClass.NO_INBOUND), 0xFFFF_FFFF):
        assert hint_for(0, peer_flags) is None
        assert hint_for(0x0000_000D, peer_flags) is None  # class bits but no bit 1
    old = encode_v2_response(V2Response(Status.PAIRED, YOU, PEER, TOKEN, hint_for(0, 0xE)))
    assert old == PAIRED_HEAD + b"\0"


def test_the_server_reads_only_bits_0_to_3() -> None:
    """Reserved bits 4-31 are ignored (never refused): a later client's new bit reaches
    an older server; a v1 peer (flags 0) or a silent v2 peer counts as unknown."""
    assert hint_for(FLAG_READS_HINTS, 0) is NatClass.UNKNOWN
    assert hint_for(FLAG_READS_HINTS | 0xFFFF_FFF0, 0xFFFF_FFF8) is NatClass.PORT_DEPENDENT
    assert flags_nat(0xFFFF_FFF3) is NatClass.UNKNOWN
    assert reads_hints(0xFFFF_FFF2) and not reads_hints(0xFFFF_FFFD)
    request = RequestReader().feed(encode_v2_request("n", flags=0xFFFF_FFF6))
    assert isinstance(request, V2Request) and request.nat is NatClass.ENDPOINT_INDEPENDENT


@pytest.mark.parametrize("byte50", [0x01, 0x0F, 0x14, 0x20, 0x90, 0xFF])
def test_other_byte_50_values_are_the_servers_fault(byte50: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_v2_response(PAIRED_HEAD + bytes([byte50]))
    assert caught.value.reason is Reason.BAD_HINT


def test_a_hint_outside_paired_is_refused_both_ways() -> None:
    waiting = encode_v2_response(V2Response(Status.WAITING, YOU, token=TOKEN))
    with pytest.raises(RemoteProtocolError) as caught:
        decode_v2_response(waiting[:50] + bytes([HINT_MARK]))
    assert caught.value.reason is Reason.BAD_HINT
    with pytest.raises(LocalProtocolError) as local:
        V2Response(Status.WAITING, YOU, peer_nat=NatClass.UNKNOWN)
    assert local.value.reason is Reason.BAD_HINT
    with pytest.raises(LocalProtocolError):
        V2Response(Status.PAIRED, YOU, PEER, peer_nat=7)  # type: ignore[arg-type]
    assert V2Response(Status.PAIRED, YOU, PEER, peer_nat=2).peer_nat is NatClass.PORT_DEPENDENT  # type: ignore[arg-type]


def test_the_client_exchange_sends_its_class_on_resume_and_reports_the_peers() -> None:
    exchange = ClientExchange(V2Request("n", flags=hint_flags(NatClass.NO_INBOUND)))
    assert exchange.start()[137:] == b"\x00\x00\x00\x0e"
    exchange.receive_data(encode_v2_response(V2Response(Status.TIMEOUT, YOU, token=TOKEN)))
    exchange.receive_eof()
    resumed = exchange.resume()
    assert resumed[100:137].rstrip(b"\0").decode() == TOKEN and resumed[137:] == b"\0\0\0\x0e"
    (event,) = exchange.receive_data(PAIRED_HEAD + b"\x12")
    assert event == Paired(YOU, PEER, TOKEN, NatClass.PORT_DEPENDENT)
    plain = ClientExchange(V2Request("n"))
    plain.start()
    assert plain.receive_data(PAIRED_HEAD + b"\0") == [Paired(YOU, PEER, TOKEN)]


@FUZZ
@given(st.integers(0, 255), st.sampled_from(list(Status)))
def test_byte_50_parses_or_raises_the_remote_error(byte50: int, status: Status) -> None:
    try:
        hint = decode_hint(byte50, status is Status.PAIRED)
    except RemoteProtocolError as exc:
        assert exc.reason is Reason.BAD_HINT
        return
    assert (hint is None) == (byte50 == 0)
    if hint is not None:
        assert status is Status.PAIRED and byte50 == HINT_MARK | hint


@FUZZ
@given(v2_names, tokens, flags, st.sampled_from(list(NatClass)))
def test_hint_flags_round_trip_beside_any_other_bits(
    name: str, token: str, other: int, nat: NatClass
) -> None:
    wire_flags = (other & ~0xE) | hint_flags(nat)
    request = RequestReader().feed(encode_v2_request(name, token, wire_flags & ~1))
    assert isinstance(request, V2Request)
    assert request.nat is nat and request.reads_hints


@FUZZ
@given(endpoints, endpoints, tokens, st.none() | st.sampled_from(list(NatClass)), flags)
def test_what_the_server_encodes_the_client_reports(
    you: Endpoint, peer: Endpoint, token: str, peer_nat: NatClass | None, reader: int
) -> None:
    response = V2Response(Status.PAIRED, you, peer, token, peer_nat)
    wire = encode_v2_response(response)
    assert (wire[50] == 0) == (peer_nat is None)
    exchange = ClientExchange(V2Request("n", flags=reader & ~1))
    exchange.start()
    assert exchange.receive_data(wire) == [Paired(you, peer, token, peer_nat)]

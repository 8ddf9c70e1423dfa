"""The extension requests (relay, observe) and the relay reply: byte vectors and fuzz."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpunch import (
    NeedMoreData,
    RemoteProtocolError,
    V1Request,
    V2Request,
    encode_v2_request,
)
from tcpunch.errors import LocalProtocolError, ProtocolError, Reason
from tcpunch.relay import (
    MAX_EXT_REQUEST,
    OBSERVE_REQUEST,
    ObserveRequest,
    RelayRefusal,
    RelayReply,
    RelayRequest,
    RelayStatus,
    ServerRequestReader,
    decode_relay_reply,
    derive_session,
    encode_relay_reply,
    encode_relay_request,
    pairing_session,
    parse_ext_request,
)

SESSION = derive_session(b"fmi_pair0_1")
VECTOR = bytes.fromhex("0054505801010b") + b"fmi_pair0_1" + SESSION + bytes.fromhex("0000")


def test_relay_request_byte_vector() -> None:
    assert hashlib.sha256(b"tcpunch relay session\0fmi_pair0_1").digest()[:16] == SESSION
    assert SESSION.hex() == derive_session(b"fmi_pair0_1").hex()
    assert encode_relay_request(RelayRequest(b"fmi_pair0_1", SESSION)) == VECTOR
    assert len(VECTOR) == 4 + 1 + 1 + 1 + 11 + 16 + 2
    assert parse_ext_request(VECTOR) == RelayRequest(b"fmi_pair0_1", SESSION, b"")


def test_relay_request_with_credential() -> None:
    wire = encode_relay_request(RelayRequest(b"n", b"\x01" * 16, b"user:sig"))
    assert wire == bytes.fromhex("00545058010101") + b"n" + b"\x01" * 16 + b"\x00\x08user:sig"
    assert parse_ext_request(wire) == RelayRequest(b"n", b"\x01" * 16, b"user:sig")


def test_observe_and_replies() -> None:
    assert bytes.fromhex("005450580102") == OBSERVE_REQUEST
    assert parse_ext_request(OBSERVE_REQUEST) == ObserveRequest()
    assert encode_relay_reply(RelayReply(RelayStatus.WAITING_FOR_PEER)) == b"\x01\x00"
    assert encode_relay_reply(RelayReply(RelayStatus.ACCEPTED)) == b"\x02\x00"
    refused = RelayReply(RelayStatus.REFUSED, RelayRefusal.DISABLED)
    assert encode_relay_reply(refused) == b"\x03\x01"
    assert decode_relay_reply(b"\x03\x01") == refused
    name_refused = RelayReply(RelayStatus.REFUSED, RelayRefusal.NAME_PATTERN)
    assert encode_relay_reply(name_refused) == b"\x03\x09"
    assert decode_relay_reply(b"\x03\x09") == name_refused
    for bad in (b"\x03\x00", b"\x02\x01", b"\x09\x00", b"\x01\x63", b"\x01"):
        with pytest.raises(RemoteProtocolError):
            decode_relay_reply(bad)


@pytest.mark.parametrize(
    ("name", "session", "credential", "reason"),
    [
        (b"", SESSION, b"", Reason.EMPTY_NAME),
        (b"x" * 101, SESSION, b"", Reason.NAME_TOO_LONG),
        (b"a\0b", SESSION, b"", Reason.NUL_IN_NAME),
        (b"a", b"short", b"", Reason.BAD_TOKEN),
        (b"a", SESSION, b"c" * 513, Reason.OVERSIZED),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry(name, session, credential, reason) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_relay_request(RelayRequest(name, session, credential))
    assert info.value.reason is reason


def test_reader_splits_anywhere() -> None:
    for cut in range(1, len(VECTOR)):
        reader = ServerRequestReader()
        assert reader.feed(VECTOR[:cut]) is NeedMoreData
        assert reader.buffered == cut
        assert reader.feed(VECTOR[cut:]) == RelayRequest(b"fmi_pair0_1", SESSION)
    one_byte = ServerRequestReader()
    for i in range(len(OBSERVE_REQUEST) - 1):
        assert one_byte.feed(OBSERVE_REQUEST[i : i + 1]) is NeedMoreData
    assert one_byte.feed(OBSERVE_REQUEST[-1:]) == ObserveRequest()


def test_reader_keeps_v1_and_v2_as_they_were() -> None:
    assert ServerRequestReader().feed(b"fmi_pair0_1") == V1Request(b"fmi_pair0_1")
    v2 = encode_v2_request("fmi_pair0_1")
    reader = ServerRequestReader()
    assert reader.feed(v2[:20]) is NeedMoreData  # the name's NUL is in there: v2
    assert reader.feed(v2[20:25]) is NeedMoreData  # a later read may start with NUL
    assert isinstance(reader.feed(v2[25:]), V2Request)
    # a v2 request with an empty name still gets v2's own refusal
    empty = b"\0" * 141
    reader = ServerRequestReader()
    assert reader.feed(empty[:2]) is NeedMoreData
    with pytest.raises(RemoteProtocolError) as info:
        reader.feed(empty[2:])
    assert info.value.reason is Reason.EMPTY_NAME


def test_reader_refuses_trailing_and_oversized() -> None:
    reader = ServerRequestReader()
    with pytest.raises(RemoteProtocolError) as info:
        reader.feed(VECTOR + b"early")
    assert info.value.reason is Reason.TRAILING_BYTES
    huge = bytes.fromhex("00545058010101") + b"n" + SESSION + b"\xff\xff"
    with pytest.raises(RemoteProtocolError) as info:
        ServerRequestReader().feed(huge)
    assert info.value.reason is Reason.OVERSIZED
    with pytest.raises(RemoteProtocolError):
        ServerRequestReader().feed(bytes.fromhex("005450580109"))  # unknown kind
    with pytest.raises(RemoteProtocolError):
        ServerRequestReader().feed(bytes.fromhex("005450580201"))  # unknown version
    assert ServerRequestReader().eof().reason is Reason.CLOSED
    partial = ServerRequestReader()
    partial.feed(VECTOR[:9])
    assert partial.eof().reason is Reason.CLOSED


@given(st.binary(max_size=MAX_EXT_REQUEST + 20), st.integers(min_value=1, max_value=50))
def test_fuzz_reader_parses_or_raises_remote_error(data: bytes, step: int) -> None:
    reader = ServerRequestReader()
    try:
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
    except RemoteProtocolError:
        return
    assert reader.buffered <= max(MAX_EXT_REQUEST, 141)


@given(st.binary(max_size=700))
def test_fuzz_magic_prefixed_bytes(tail: bytes) -> None:
    try:
        result = parse_ext_request(b"\x00TPX" + tail)
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)
        return
    assert result is None or isinstance(result, RelayRequest | ObserveRequest)


@given(
    st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b),
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=512),
)
def test_fuzz_round_trip(name: bytes, session: bytes, credential: bytes) -> None:
    request = RelayRequest(name, session, credential)
    assert parse_ext_request(encode_relay_request(request)) == request


@given(st.binary(min_size=2, max_size=2))
def test_fuzz_reply(data: bytes) -> None:
    try:
        reply = decode_relay_reply(data)
    except RemoteProtocolError:
        return
    assert encode_relay_reply(reply) == data


def test_pairing_session_is_the_same_on_both_ends_and_changes_per_run() -> None:
    a, b = ("198.18.1.2", 40000), ("198.18.1.3", 51000)
    ours = pairing_session(b"fmi_pair0_1", a, b)
    assert ours == pairing_session(b"fmi_pair0_1", b, a)
    expected = hashlib.sha256(
        b"tcpunch relay pairing\0"
        + bytes.fromhex("c6 12 01 02 9c 40 00 00 c6 12 01 03 c7 38 00 00")
        + b"fmi_pair0_1"
    ).digest()[:16]
    assert ours == expected
    assert ours != pairing_session(b"fmi_pair0_1", a, ("198.18.1.3", 51001))
    assert ours != pairing_session(b"fmi_pair1_0", a, b)

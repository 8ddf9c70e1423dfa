"""Byte vectors for the shared codec: every field, every malformation."""

from __future__ import annotations

import pytest

from tcpunch import (
    NO_TOKEN,
    V2_REQUEST_SIZE,
    V2_RESPONSE_SIZE,
    Command,
    Endpoint,
    NeedMoreData,
    ProtocolError,
    RequestReader,
    Status,
    V1Request,
    V2Request,
    V2Response,
    decode_v2_request,
    decode_v2_response,
    encode_v1_name,
    encode_v2_request,
    encode_v2_response,
    pack_endpoint,
    unpack_endpoint,
)

TOKEN = "0f0e0d0c-0b0a-4908-8706-050403020100"


# -- endpoints -------------------------------------------------------------------------


def test_pack_endpoint_vector():
    assert pack_endpoint("198.18.0.1", 10000) == bytes([198, 18, 0, 1, 0x27, 0x10, 0, 0])
    assert pack_endpoint("0.0.0.0", 0) == b"\0" * 8
    assert pack_endpoint("255.255.255.255", 65535) == b"\xff" * 6 + b"\0\0"


def test_unpack_endpoint_ignores_padding():
    assert unpack_endpoint(bytes([10, 0, 0, 7, 0x01, 0xBB, 0xAA, 0x55])) == Endpoint(
        "10.0.0.7", 443
    )


@pytest.mark.parametrize("size", [0, 7, 9])
def test_unpack_endpoint_wrong_size(size):
    with pytest.raises(ProtocolError, match="8 bytes"):
        unpack_endpoint(b"\0" * size)


@pytest.mark.parametrize(
    ("ip", "port", "match"),
    [
        ("::1", 1, "IPv4"),
        ("300.1.1.1", 1, "IPv4"),
        ("host", 1, "IPv4"),
        ("1.2.3.4", -1, "port"),
        ("1.2.3.4", 65536, "port"),
    ],
)
def test_pack_endpoint_refuses(ip, port, match):
    with pytest.raises(ProtocolError, match=match):
        pack_endpoint(ip, port)


def test_endpoint_str():
    assert str(Endpoint("1.2.3.4", 5)) == "1.2.3.4:5"


# -- v1 --------------------------------------------------------------------------------


def test_encode_v1_name():
    assert encode_v1_name("fmi_pair3_5") == b"fmi_pair3_5"
    assert encode_v1_name(b"\xff\xfe") == b"\xff\xfe"
    assert encode_v1_name("x" * 100) == b"x" * 100


@pytest.mark.parametrize(
    ("name", "match"),
    [("", "empty"), ("x" * 101, "at most 100"), (b"a\0b", "NUL")],
)
def test_encode_v1_name_refuses(name, match):
    with pytest.raises(ProtocolError, match=match):
        encode_v1_name(name)


# -- v2 requests -----------------------------------------------------------------------


def test_encode_v2_request_vector():
    raw = encode_v2_request("ab", TOKEN, flags=0x01020304)
    assert len(raw) == V2_REQUEST_SIZE == 141
    assert raw[:3] == b"ab\0" and raw[3:100] == b"\0" * 97
    assert raw[100:136] == TOKEN.encode() and raw[136] == 0
    assert raw[137:] == b"\x01\x02\x03\x04"


def test_encode_v2_request_without_token_is_zeros():
    raw = encode_v2_request("ab")
    assert raw[100:141] == b"\0" * 41


def test_v2_request_round_trip_utf8():
    raw = encode_v2_request("größe_π", TOKEN)
    assert decode_v2_request(raw) == V2Request("größe_π", TOKEN, 0)


def test_v2_name_of_99_bytes_fits_100_does_not():
    assert decode_v2_request(encode_v2_request("n" * 99)).name == "n" * 99
    with pytest.raises(ProtocolError, match="at most 99"):
        encode_v2_request("n" * 100)


@pytest.mark.parametrize(
    ("name", "token", "match"),
    [("", NO_TOKEN, "empty"), ("a\0b", NO_TOKEN, "NUL"), ("ok", "nope", "not a UUID")],
)
def test_encode_v2_request_refuses(name, token, match):
    with pytest.raises(ProtocolError, match=match):
        encode_v2_request(name, token)


def _v2(name: bytes, token: bytes = b"", flags: bytes = b"\0" * 4) -> bytes:
    return name.ljust(100, b"\0") + token.ljust(37, b"\0") + flags


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_v2(b"ok")[:-1], "141 bytes"),
        (_v2(b"ok") + b"\0", "141 bytes"),
        (b"n" * 100 + b"\0" * 41, "pairing name field is not NUL-terminated"),
        (_v2(b""), "empty"),
        (_v2(b"\xc3\x28"), "not UTF-8"),
        (_v2(b"ok", b"t" * 37), "reconnect token field is not NUL-terminated"),
        (_v2(b"ok", b"not-a-uuid"), "not a UUID"),
        (_v2(b"ok", "ü".encode() + b"x" * 10), "not ASCII"),
    ],
    ids=[
        "short",
        "long",
        "name-unterminated",
        "name-empty",
        "name-not-utf8",
        "token-unterminated",
        "token-not-uuid",
        "token-not-ascii",
    ],
)
def test_decode_v2_request_malformations(raw, match):
    with pytest.raises(ProtocolError, match=match):
        decode_v2_request(raw)


def test_decode_v2_request_bytes_after_name_nul_are_ignored():
    raw = b"ok\0garbage".ljust(100, b"\0") + b"\0" * 41
    assert decode_v2_request(raw).name == "ok"


def test_decode_v2_request_flags():
    assert decode_v2_request(_v2(b"ok", flags=b"\0\0\1\0")).flags == 256


# -- v2 responses ----------------------------------------------------------------------


def test_encode_v2_response_vector():
    raw = encode_v2_response(
        V2Response(Status.PAIRED, Endpoint("1.2.3.4", 258), Endpoint("5.6.7.8", 515), TOKEN)
    )
    assert len(raw) == V2_RESPONSE_SIZE == 51
    assert raw[0] == 1
    assert raw[1:7] == bytes([1, 2, 3, 4, 1, 2])
    assert raw[7:13] == bytes([5, 6, 7, 8, 2, 3])
    assert raw[13:49] == TOKEN.encode() and raw[49] == 0
    assert raw[50] == 0  # the 51st byte the field clients read


def test_encode_v2_waiting_defaults():
    raw = encode_v2_response(V2Response(Status.WAITING))
    assert raw == b"\0" * 51


@pytest.mark.parametrize("status", list(Status))
def test_v2_response_round_trip(status):
    response = V2Response(status, Endpoint("10.1.2.3", 4), Endpoint("0.0.0.0", 0), TOKEN)
    assert decode_v2_response(encode_v2_response(response)) == response


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\0" * 50, "51 bytes"),
        (b"\0" * 52, "51 bytes"),
        (b"\x04" + b"\0" * 50, "unknown v2 status"),
        (b"\0" * 13 + b"t" * 37 + b"\0", "not NUL-terminated"),
        (b"\0" * 13 + b"bad\0".ljust(37, b"\0") + b"\0", "not a UUID"),
    ],
)
def test_decode_v2_response_malformations(raw, match):
    with pytest.raises(ProtocolError, match=match):
        decode_v2_response(raw)


def test_encode_v2_response_refuses_bad_token_and_ip():
    with pytest.raises(ProtocolError):
        encode_v2_response(V2Response(Status.WAITING, token="zzz"))
    with pytest.raises(ProtocolError):
        encode_v2_response(V2Response(Status.WAITING, you=Endpoint("::1", 1)))


# -- the request reader ----------------------------------------------------------------


def test_reader_v1_name_is_the_first_read():
    reader = RequestReader()
    assert reader.feed(b"fmi_pair0_1") == V1Request(b"fmi_pair0_1")
    assert reader.done


def test_reader_v1_of_100_bytes_and_101():
    assert RequestReader().feed(b"x" * 100) == V1Request(b"x" * 100)
    with pytest.raises(ProtocolError, match="at most 100"):
        RequestReader().feed(b"x" * 101)


def test_reader_v2_in_pieces():
    raw = encode_v2_request("piece", TOKEN)
    reader = RequestReader()
    assert reader.feed(raw[:6]) is NeedMoreData
    assert reader.feed(raw[6:140]) is NeedMoreData
    assert reader.buffered == 140
    assert reader.feed(raw[140:]) == V2Request("piece", TOKEN)


def test_reader_v2_too_long_in_one_read():
    with pytest.raises(ProtocolError, match="141 bytes"):
        RequestReader().feed(encode_v2_request("x") + b"y")


def test_reader_bytes_after_request():
    reader = RequestReader()
    reader.feed(b"name")
    with pytest.raises(ProtocolError, match="unexpected bytes"):
        reader.feed(b"more")


def test_reader_empty_feed_needs_more():
    assert RequestReader().feed(b"") is NeedMoreData


def test_reader_nul_after_100_bytes_is_not_v2():
    with pytest.raises(ProtocolError, match="at most 100"):
        RequestReader().feed(b"x" * 100 + b"\0" + b"y" * 40)


def test_reader_nul_at_the_last_name_byte_is_v2():
    reader = RequestReader()
    assert reader.feed(b"n" * 99 + b"\0") is NeedMoreData  # a NUL within 100 bytes: v2
    assert reader.feed(b"\0" * 41) == V2Request("n" * 99)


def test_reader_commands():
    assert RequestReader().feed(b"delete_pairs") == Command("delete_pairs")
    assert RequestReader().feed(b"remove_pair_fmi3_4") == Command("remove_pair", b"fmi3_4")
    assert RequestReader().feed(b"delete_pairsX") == V1Request(b"delete_pairsX")
    with pytest.raises(ProtocolError, match="needs a pairing name"):
        RequestReader().feed(b"remove_pair_")


def test_reader_eof_messages():
    assert "without sending" in str(RequestReader().eof())
    reader = RequestReader()
    reader.feed(encode_v2_request("x")[:50])
    assert "after 50 bytes" in str(reader.eof())


def test_reader_v2_malformed_raises_from_decode():
    with pytest.raises(ProtocolError, match="not UTF-8"):
        RequestReader().feed(_v2(b"\xff"))


@pytest.mark.parametrize(
    ("raw", "junk"),
    [
        (b"fmi_pair3_5", False),
        ("caf\u00e9-\u4e2d".encode(), False),  # multi-byte UTF-8 never holds bytes < 0x80
        (b"tab\tname", True),
        (b"line\n", True),
        (b"del\x7f", True),
        (b"\x00", True),
    ],
)
def test_v1_control_bytes_rule(raw: bytes, junk: bool) -> None:
    from tcpunch import V1_CONTROL_BYTES

    assert (V1_CONTROL_BYTES.search(raw) is not None) is junk

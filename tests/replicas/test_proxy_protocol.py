"""PROXY v2 parser: the spec's byte layout, every malformation, and a fuzz test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.proxy_protocol import (
    DEFAULT_MAX_HEADER_SIZE,
    SIGNATURE,
    Parsed,
    ProxyHeaderReader,
    ProxyProtocolError,
    ProxyReason,
    build_header,
)
from tcpunch import Endpoint, NeedMoreData
from tcpunch.errors import Reason, RemoteProtocolError

# TCP over IPv4, PROXY, 203.0.113.7:51234 -> 192.0.2.10:10000, written out by hand from
# proxy-protocol.txt section 2.2 (not by build_header).
V4_VECTOR = (
    b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # signature
    b"\x21"  # version 2, command PROXY
    b"\x11"  # AF_INET, STREAM
    b"\x00\x0c"  # 12 address bytes follow
    b"\xcb\x00\x71\x07"  # src 203.0.113.7
    b"\xc0\x00\x02\x0a"  # dst 192.0.2.10
    b"\xc8\x22"  # src port 51234
    b"\x27\x10"  # dst port 10000
)
V6_VECTOR = (
    SIGNATURE
    + b"\x21\x21\x00\x24"
    + bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("20010db8000000000000000000000002")
    + b"\x01\xbb\x27\x10"
)
LOCAL_VECTOR = SIGNATURE + b"\x20\x00\x00\x00"


def parse_all(data: bytes) -> Parsed:
    result = ProxyHeaderReader().feed(data)
    assert isinstance(result, Parsed)
    return result


def test_signature_is_the_specs_twelve_bytes():
    assert (
        bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]) == SIGNATURE
    )
    assert len(SIGNATURE) == 12


def test_ipv4_vector():
    parsed = parse_all(V4_VECTOR)
    header = parsed.header
    assert (header.command, header.family, header.transport) == ("proxy", "inet", "stream")
    assert header.source == ("203.0.113.7", 51234)
    assert header.destination == ("192.0.2.10", 10000)
    assert header.client_endpoint() == Endpoint("203.0.113.7", 51234)
    assert header.size == 28 and parsed.rest == b""
    assert build_header(("203.0.113.7", 51234), ("192.0.2.10", 10000)) == V4_VECTOR


def test_ipv6_vector():
    header = parse_all(V6_VECTOR).header
    assert header.family == "inet6"
    assert header.source == ("2001:db8::1", 443)
    assert header.destination == ("2001:db8::2", 10000)
    assert header.client_endpoint() is None  # TCPunch carries IPv4 only
    assert header.size == 52


def test_ipv4_mapped_ipv6_source_is_unmapped():
    raw = build_header(("::ffff:198.51.100.4", 4000), ("::ffff:192.0.2.1", 10000))
    assert raw[13] == 0x21
    assert parse_all(raw).header.client_endpoint() == Endpoint("198.51.100.4", 4000)


def test_local_command_has_no_addresses():
    header = parse_all(LOCAL_VECTOR).header
    assert header.command == "local" and header.source is None
    assert header.client_endpoint() is None
    assert build_header(None, None, command="local") == LOCAL_VECTOR


def test_local_with_addresses_skips_them():
    raw = SIGNATURE + b"\x20\x11\x00\x0c" + bytes(12) + b"next"
    parsed = parse_all(raw)
    assert parsed.header.command == "local" and parsed.header.source is None
    assert parsed.rest == b"next"


@pytest.mark.parametrize("family_byte", [0x00, 0x31, 0x12, 0x22, 0x32])
def test_unspec_unix_and_udp_fall_back_to_no_address(family_byte):
    length = {0x00: 0, 0x31: 216, 0x32: 216, 0x12: 12, 0x22: 36}[family_byte]
    raw = SIGNATURE + bytes([0x21, family_byte]) + length.to_bytes(2, "big") + bytes(length)
    header = parse_all(raw).header
    assert header.source is None and header.command == "proxy"


def test_tlvs_are_kept_and_request_bytes_follow():
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP
    request = b"fmi_pair3_5"
    parsed = parse_all(build_header(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=tlv) + request)
    assert parsed.header.tlvs == tlv
    assert parsed.rest == request


def test_a_second_header_is_not_parsed():
    """A balancer forwards a client's own (forged) header after its own: only the first
    one counts, the forged one is the client's data."""
    forged = build_header(("6.6.6.6", 666), ("192.0.2.10", 10000))
    parsed = parse_all(V4_VECTOR + forged + b"name")
    assert parsed.header.source == ("203.0.113.7", 51234)
    assert parsed.rest == forged + b"name"


def test_byte_by_byte_feeding():
    reader = ProxyHeaderReader()
    data = V4_VECTOR + b"x"
    for byte in data[:-2]:
        assert reader.feed(bytes([byte])) is NeedMoreData
    result = reader.feed(data[-2:])
    assert isinstance(result, Parsed) and result.rest == b"x" and reader.done
    with pytest.raises(RuntimeError, match="after the header reader finished"):
        reader.feed(b"more")


def test_wrong_first_byte_refused_at_once():
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError, match="did not start with the PROXY v2") as info:
        reader.feed(b"f")
    assert info.value.proxy_reason is ProxyReason.BAD_SIGNATURE
    assert isinstance(info.value, RemoteProtocolError)


def test_text_v1_header_gets_a_hint():
    with pytest.raises(ProxyProtocolError, match="text PROXY v1"):
        ProxyHeaderReader().feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")


@pytest.mark.parametrize(
    ("preamble_tail", "reason", "tcpunch_reason", "match"),
    [
        (b"\x11\x11\x00\x0c", ProxyReason.BAD_VERSION, Reason.UNEXPECTED, "version 1"),
        (b"\x31\x11\x00\x0c", ProxyReason.BAD_VERSION, Reason.UNEXPECTED, "version 3"),
        (b"\x22\x11\x00\x0c", ProxyReason.BAD_COMMAND, Reason.BAD_COMMAND, "command 0x2"),
        (b"\x21\x41\x00\x0c", ProxyReason.BAD_FAMILY, Reason.BAD_ENDPOINT, "0x41"),
        (b"\x21\x13\x00\x0c", ProxyReason.BAD_FAMILY, Reason.BAD_ENDPOINT, "0x13"),
        (b"\x21\x11\x00\x0b", ProxyReason.SHORT_ADDRESSES, Reason.WRONG_SIZE, "take 12"),
        (b"\x21\x21\x00\x0c", ProxyReason.SHORT_ADDRESSES, Reason.WRONG_SIZE, "take 36"),
        (b"\x21\x11\xff\xff", ProxyReason.TOO_LONG, Reason.OVERSIZED, "cap of 4096"),
    ],
)
def test_malformed_preambles(preamble_tail, reason, tcpunch_reason, match):
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError, match=match) as info:
        reader.feed(SIGNATURE + preamble_tail)
    assert info.value.proxy_reason is reason
    assert info.value.reason is tcpunch_reason
    with pytest.raises(RuntimeError):
        reader.feed(b"")


def test_length_cap_is_checked_before_buffering():
    cap = DEFAULT_MAX_HEADER_SIZE
    fits = SIGNATURE + b"\x21\x00" + (cap - 16).to_bytes(2, "big")
    reader = ProxyHeaderReader()
    assert reader.feed(fits) is NeedMoreData
    assert isinstance(reader.feed(bytes(cap - 16)), Parsed)
    over = SIGNATURE + b"\x21\x00" + (cap - 15).to_bytes(2, "big")
    with pytest.raises(ProxyProtocolError, match="over this server's cap"):
        ProxyHeaderReader().feed(over)  # refused on the 16 preamble bytes alone


def test_cap_bounds():
    ProxyHeaderReader(16 + 0xFFFF)
    for bad in (16, 51, 16 + 0x10000):
        with pytest.raises(ValueError, match="max_header_size"):
            ProxyHeaderReader(bad)


def test_eof_inside_header():
    reader = ProxyHeaderReader()
    assert reader.feed(V4_VECTOR[:20]) is NeedMoreData
    with pytest.raises(ProxyProtocolError, match="closed after 20 bytes") as info:
        reader.eof()
    assert info.value.proxy_reason is ProxyReason.CLOSED
    done = ProxyHeaderReader()
    done.feed(V4_VECTOR)
    done.eof()  # a complete header then EOF is the caller's business, not an error


def test_build_header_refuses_mixed_families():
    with pytest.raises(ValueError, match="must both be IPv4 or both IPv6"):
        build_header(("1.2.3.4", 1), ("::1", 2))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=120), cuts=st.lists(st.integers(0, 120), max_size=4))
def test_fuzz_parse_or_raise_the_remote_error(data, cuts):
    """Any bytes, in any split: NeedMoreData, a header, or ProxyProtocolError."""
    reader = ProxyHeaderReader(64)
    pieces = [
        data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
    ]
    for piece in pieces:
        try:
            result = reader.feed(piece)
        except ProxyProtocolError as exc:
            assert isinstance(exc.proxy_reason, ProxyReason)
            return
        if isinstance(result, Parsed):
            assert result.header.size <= 64
            assert data.startswith(SIGNATURE)
            return
        assert result is NeedMoreData


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from([4, 6]),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    raw=st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
    tlvs=st.binary(max_size=40),
    rest=st.binary(max_size=40),
    split=st.integers(0, 200),
)
def test_fuzz_round_trip(family, ports, raw, tlvs, rest, split):
    import ipaddress

    width = 4 if family == 4 else 16
    src = str(ipaddress.ip_address(raw[0][:width]))
    dst = str(ipaddress.ip_address(raw[1][:width]))
    data = build_header((src, ports[0]), (dst, ports[1]), tlvs=tlvs) + rest
    reader = ProxyHeaderReader()
    first = reader.feed(data[:split])
    result = first if isinstance(first, Parsed) else reader.feed(data[split:])
    assert isinstance(result, Parsed)
    assert result.header.source == (src, ports[0])
    assert result.header.destination == (dst, ports[1])
    assert result.header.tlvs == tlvs
    if isinstance(first, Parsed):
        assert first.rest == data[first.header.size : split]
    else:
        assert result.rest == rest

"""Credentials (TURN REST style, HMAC-SHA256) and their v2 trailer: vectors and fuzz."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpunch import (
    V2_REQUEST_SIZE,
    ProtocolError,
    Reason,
    RemoteProtocolError,
    decode_v2_request,
    encode_v2_request,
)
from tcpunch.credential import (
    MAX_CREDENTIAL_BYTES,
    MAX_TTL,
    Verdict,
    mint,
    parse,
    password_for,
    verify,
)
from tcpunch.v2credential import (
    FLAG_CREDENTIAL,
    MAX_TRAILER_CREDENTIAL,
    V2_FLAGS_OFFSET,
    announces_credential,
    decode_trailer,
    encode_trailer,
    split_request,
    trailer_size,
    with_credential,
)

SECRET = b"0123456789abcdef"
NOW = 1_700_000_000
# Independently computed:
#   printf '1700003600:job/' | openssl dgst -sha256 -hmac 0123456789abcdef -binary | base64
VECTOR = "1700003600:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM="


# -- minting and verifying --------------------------------------------------------------


def test_mint_vector_matches_openssl():
    assert mint(SECRET, "job/", 3600, NOW) == VECTOR
    assert mint(SECRET, "job/", 3600, NOW + 0.9) == VECTOR  # expiry is whole seconds


def test_password_is_turn_rest_style():
    digest = hmac.new(SECRET, b"1700003600:job/", hashlib.sha256).digest()
    assert password_for(SECRET, "1700003600:job/") == base64.b64encode(digest).decode()


def test_parse_splits_on_first_and_last_colon():
    credential = mint(SECRET, "a:b:c/", 60, NOW)
    parsed = parse(credential)
    assert (parsed.expiry, parsed.prefix) == (NOW + 60, "a:b:c/")
    assert str(parsed) == credential
    assert verify(SECRET, credential, "a:b:c/3_5", NOW) is Verdict.OK


@pytest.mark.parametrize(
    ("name", "at", "verdict"),
    [
        ("job/0_1", NOW, Verdict.OK),
        ("job/0_1", NOW + 3599, Verdict.OK),
        (b"job/raw-v1-name", NOW, Verdict.OK),
        ("job/0_1", NOW + 3600, Verdict.EXPIRED),
        ("job/0_1", NOW + 10**6, Verdict.EXPIRED),
        ("other/0_1", NOW, Verdict.WRONG_PREFIX),
        ("job", NOW, Verdict.WRONG_PREFIX),
        (b"jo", NOW, Verdict.WRONG_PREFIX),
    ],
)
def test_verify_cases(name, at, verdict):
    assert verify(SECRET, VECTOR, name, at) is verdict


def test_forged_credentials():
    other_secret = b"fedcba9876543210"
    assert verify(other_secret, VECTOR, "job/0_1", NOW) is Verdict.FORGED
    # stretching the expiry or widening the prefix breaks the HMAC
    assert verify(SECRET, VECTOR.replace("1700003600", "1800003600"), "job/", NOW) is Verdict.FORGED
    assert verify(SECRET, VECTOR.replace(":job/:", ":jo:"), "jo", NOW) is Verdict.FORGED
    # a forged credential is reported forged even when expired or for the wrong prefix
    assert verify(other_secret, VECTOR, "other", NOW + 10**6) is Verdict.FORGED


@pytest.mark.parametrize(
    "credential",
    [
        "",
        "nonsense",
        "1700003600:job/",
        ":job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "-1:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "17e9:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "1700003600::nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "1700003600:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+os",
        "1700003600:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+o$M=",
        "1700003600:j\x00b/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "1700003600:" + "x" * 200 + ":nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
        "١٧٠٠٠٠٣٦٠٠:job/:nUBObrvCIlGcZ0O/hud6g9MQ83mdqS0QMjTxQTQ+osM=",
    ],
)
def test_malformed_credentials(credential):
    assert verify(SECRET, credential, "job/0_1", NOW) is Verdict.MALFORMED


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix": ""}, "empty"),
        ({"prefix": "x" * 100}, "at most 99"),
        ({"prefix": "a\nb"}, "control"),
        ({"ttl": 0}, "positive"),
        ({"ttl": -5}, "positive"),
        ({"ttl": True}, "positive"),
        ({"ttl": 7 * 24 * 3600 + 1}, r"ttl \(--ttl\) is at most 604800 seconds \(7 days\)"),
        ({"ttl": 10**20}, "at most 604800"),
        ({"secret": b"short"}, "at least 16"),
    ],
)
def test_mint_refuses_bad_input(kwargs, match):
    args = {"secret": SECRET, "prefix": "job/", "ttl": 60} | kwargs
    with pytest.raises(ValueError, match=match):
        mint(args["secret"], args["prefix"], args["ttl"], NOW)


def test_errors_never_contain_the_secret():
    secret = b"TOP-SECRET-do-not-print-me"
    with pytest.raises(ValueError) as info:
        mint(secret, "", 60, NOW)
    assert "TOP-SECRET" not in str(info.value)
    credential = mint(secret, "job/", 60, NOW)
    assert "TOP-SECRET" not in credential and "TOP-SECRET" not in repr(parse(credential))


@given(st.text(max_size=300), st.text(max_size=120), st.floats(allow_nan=False))
def test_verify_fuzz_only_verdicts(credential, name, at):
    """Arbitrary input gives a verdict, never an exception, and never OK (no forgery)."""
    verdict = verify(SECRET, credential, name, at)
    assert verdict in set(Verdict) and verdict is not Verdict.OK


@given(
    st.text(
        st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cs"]),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, MAX_TTL),
    st.text(max_size=20),
)
def test_mint_verify_roundtrip(prefix, ttl, suffix):
    credential = mint(SECRET, prefix, ttl, NOW)
    assert len(credential.encode()) <= MAX_CREDENTIAL_BYTES
    assert verify(SECRET, credential, prefix + suffix, NOW) is Verdict.OK
    assert verify(SECRET, credential, prefix + suffix, NOW + ttl) is Verdict.EXPIRED


# -- the v2 trailer ---------------------------------------------------------------------


def test_trailer_byte_vector():
    request = encode_v2_request("job/0_1")
    wire = with_credential(request, VECTOR)
    assert wire[:V2_FLAGS_OFFSET] == request[:V2_FLAGS_OFFSET]
    assert wire[V2_FLAGS_OFFSET:V2_REQUEST_SIZE] == b"\x00\x00\x00\x01"
    assert wire[V2_REQUEST_SIZE : V2_REQUEST_SIZE + 2] == len(VECTOR).to_bytes(2, "big")
    assert wire[V2_REQUEST_SIZE + 2 :] == VECTOR.encode()
    assert len(VECTOR) == 60 and len(wire) == 141 + 2 + 60
    assert wire[141:143] == b"\x00\x3c"
    assert decode_v2_request(wire[:V2_REQUEST_SIZE]).flags == FLAG_CREDENTIAL
    assert split_request(wire) == (wire[:V2_REQUEST_SIZE], VECTOR)


def test_wire_constants_agree_with_the_v2_codec():
    request = encode_v2_request("n", flags=0x01020304)
    assert len(request) == V2_REQUEST_SIZE
    assert request[V2_FLAGS_OFFSET:] == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("name", ["a", "fmi_pair3_5", "x" * 99])
def test_requests_without_the_flag_are_unchanged(name):
    """Every request today's clients send splits off as itself, with no credential."""
    request = encode_v2_request(name)
    assert not announces_credential(request)
    assert split_request(request) == (request, None)
    assert split_request(request[:-1]) is None


def test_split_waits_for_the_whole_trailer():
    wire = with_credential(encode_v2_request("job/1"), VECTOR)
    for cut in range(V2_REQUEST_SIZE, len(wire)):
        assert split_request(wire[:cut]) is None
    assert split_request(wire) is not None


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (b"\x00\x00", Reason.WRONG_SIZE),
        ((MAX_TRAILER_CREDENTIAL + 1).to_bytes(2, "big"), Reason.OVERSIZED),
        (b"\xff\xff", Reason.OVERSIZED),
        (b"\x00\x02\xff\xfe", Reason.NOT_UTF8),
        (b"\x00\x01ab", Reason.TRAILING_BYTES),
    ],
)
def test_bad_trailers(after, reason):
    request = with_credential(encode_v2_request("job/1"), "x")[:V2_REQUEST_SIZE]
    with pytest.raises(RemoteProtocolError) as info:
        split_request(request + after)
    assert info.value.reason is reason


def test_oversized_trailer_is_refused_from_its_length_alone():
    assert trailer_size(b"\x00") is None
    with pytest.raises(RemoteProtocolError) as info:
        trailer_size(b"\x02\x01")
    assert info.value.reason is Reason.OVERSIZED


def test_bytes_after_a_flagless_request_are_refused():
    with pytest.raises(RemoteProtocolError) as info:
        split_request(encode_v2_request("a") + b"\x00\x05hello")
    assert info.value.reason is Reason.OVERSIZED


def test_trailer_encode_limits():
    assert encode_trailer("ab") == b"\x00\x02ab"
    assert decode_trailer(b"\x00\x02ab") == "ab"
    with pytest.raises(ProtocolError):
        encode_trailer("")
    with pytest.raises(ProtocolError):
        encode_trailer("x" * (MAX_TRAILER_CREDENTIAL + 1))
    with pytest.raises(ProtocolError):
        with_credential(b"\0" * 140, "x")


@given(st.binary(max_size=V2_REQUEST_SIZE + 600))
def test_split_fuzz_parse_or_remote_error(data):
    """Arbitrary bytes: need-more, a request and credential, or RemoteProtocolError."""
    try:
        result = split_request(data)
    except RemoteProtocolError as exc:
        assert isinstance(exc.reason, Reason)
        return
    if result is not None:
        request, credential = result
        assert len(request) == V2_REQUEST_SIZE
        assert (credential is not None) == announces_credential(request)


@given(st.text(min_size=1, max_size=170))
def test_trailer_roundtrip(credential):
    if len(credential.encode("utf-8", "surrogatepass")) > MAX_TRAILER_CREDENTIAL:
        return
    try:
        wire = with_credential(encode_v2_request("n"), credential)
    except UnicodeEncodeError:  # lone surrogates are not UTF-8: nobody can send them
        return
    assert split_request(wire) == (wire[:V2_REQUEST_SIZE], credential)

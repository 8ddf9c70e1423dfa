"""v2 requests carrying a credential trailer: byte vectors through RequestReader and the
client exchange; requests without one are byte-identical to the fork's."""

from __future__ import annotations

import pytest

from tcpunch import (
    ClientExchange,
    LocalProtocolError,
    NeedMoreData,
    Reason,
    RemoteProtocolError,
    RequestReader,
    Status,
    V2Request,
    V2Response,
    encode_v2_request,
    encode_v2_response,
)

TOKEN = "0f0e0d0c-0b0a-4908-8706-050403020100"
CREDENTIAL = "1700000600:job-7/:" + "A" * 43 + "="
NAME_FIELD = b"job-7/#0-1".ljust(100, b"\0")


def vector(flags: bytes, trailer: bytes = b"", token: bytes = b"") -> bytes:
    return NAME_FIELD + token.ljust(37, b"\0") + flags + trailer


def test_flagless_request_is_the_forks_141_bytes():
    assert encode_v2_request("job-7/#0-1") == vector(b"\0\0\0\0")
    assert V2Request("job-7/#0-1").encode() == vector(b"\0\0\0\0")
    assert RequestReader().feed(vector(b"\0\0\0\0")) == V2Request("job-7/#0-1")
    assert RequestReader().feed(vector(b"\0\0\0\0")).credential is None


def test_credentialed_request_byte_vector():
    wire = vector(b"\0\0\0\1", b"\x00\x3e" + CREDENTIAL.encode())
    assert len(CREDENTIAL) == 0x3E and len(wire) == 141 + 2 + 62
    assert encode_v2_request("job-7/#0-1", credential=CREDENTIAL) == wire
    request = RequestReader().feed(wire)
    assert request == V2Request("job-7/#0-1", flags=1, credential=CREDENTIAL)
    assert isinstance(request, V2Request) and request.credential == CREDENTIAL
    assert CREDENTIAL not in repr(request) and "credential" not in repr(request)


def test_other_flag_bits_and_the_token_survive():
    wire = vector(b"\x80\0\0\1", b"\x00\x01c", TOKEN.encode())
    request = RequestReader().feed(wire)
    assert request == V2Request("job-7/#0-1", TOKEN, 0x8000_0001, "c")
    assert V2Request("job-7/#0-1", TOKEN, 0x8000_0000, "c").encode() == wire  # bit 0 set


def test_reader_waits_for_the_trailer_byte_by_byte():
    wire = vector(b"\0\0\0\1", b"\x00\x3e" + CREDENTIAL.encode())
    reader = RequestReader()
    assert reader.feed(wire[:11]) is NeedMoreData  # the first read holds the NUL: v2
    for at in range(11, len(wire) - 1):
        assert reader.feed(wire[at : at + 1]) is NeedMoreData
        assert not reader.done
    assert reader.feed(wire[-1:]) == V2Request("job-7/#0-1", credential=CREDENTIAL)
    assert reader.done
    with pytest.raises(RemoteProtocolError) as info:
        reader.feed(b"x")
    assert info.value.reason is Reason.TRAILING_BYTES


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (b"\x00\x00", Reason.WRONG_SIZE),  # an empty trailer
        (b"\x02\x01", Reason.OVERSIZED),  # 513 announced: refused from the length alone
        (b"\xff\xff", Reason.OVERSIZED),
        (b"\x00\x02\xc3\x28", Reason.NOT_UTF8),
        (b"\x00\x01cX", Reason.TRAILING_BYTES),
    ],
)
def test_reader_refuses_bad_trailers(after, reason):
    with pytest.raises(RemoteProtocolError) as info:
        RequestReader().feed(vector(b"\0\0\0\1", after))
    assert info.value.reason is reason


def test_incomplete_trailer_at_eof_is_the_remotes_error():
    reader = RequestReader()
    assert reader.feed(vector(b"\0\0\0\1", b"\x00\x05ab")) is NeedMoreData
    assert reader.buffered == 145
    assert isinstance(reader.eof(), RemoteProtocolError)


def test_bytes_after_a_flagless_request_are_still_oversized():
    with pytest.raises(RemoteProtocolError) as info:
        RequestReader().feed(vector(b"\0\0\0\0", b"\x00\x01c"))
    assert info.value.reason is Reason.OVERSIZED


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        ("", Reason.EMPTY_NAME),
        ("x" * 513, Reason.NAME_TOO_LONG),
        ("\udcff", Reason.NOT_UTF8),
        (b"bytes", Reason.WRONG_TYPE),
    ],
)
def test_request_refuses_bad_credentials_without_quoting_them(credential, reason):
    with pytest.raises(LocalProtocolError) as info:
        V2Request("n", credential=credential)
    assert info.value.reason is reason
    if isinstance(credential, str) and credential:
        assert credential not in str(info.value)


def test_client_exchange_sends_the_credential_first_and_on_every_resume():
    exchange = ClientExchange(V2Request("job-7/#0-1", credential=CREDENTIAL))
    assert exchange.carries_credential
    first = exchange.start()
    assert first == encode_v2_request("job-7/#0-1", credential=CREDENTIAL)
    you = ("203.0.113.5", 4000)
    exchange.receive_data(encode_v2_response(V2Response(Status.WAITING, you, token=TOKEN)))
    exchange.receive_data(encode_v2_response(V2Response(Status.TIMEOUT, you, token=TOKEN)))
    exchange.receive_eof()
    resumed = exchange.resume()
    assert resumed == encode_v2_request("job-7/#0-1", TOKEN, credential=CREDENTIAL)
    assert RequestReader().feed(resumed).credential == CREDENTIAL
    assert not ClientExchange(V2Request("job-7/#0-1")).carries_credential

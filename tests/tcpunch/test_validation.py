"""Requests, responses, endpoints and events cannot be built invalid (LocalProtocolError)."""

from __future__ import annotations

import dataclasses

import pytest

from tcpunch import (
    Command,
    Endpoint,
    LocalProtocolError,
    OwnEndpoint,
    Paired,
    Reason,
    RequestReader,
    ServerClosed,
    ServerError,
    Status,
    TimedOut,
    V1Request,
    V2Request,
    V2Response,
    Waiting,
    encode_v1_name,
)

TOKEN = "0f0e0d0c-0b0a-4908-8706-050403020100"
YOU = Endpoint("198.18.0.1", 40000)


def refused(reason: Reason, build, *args, **kwargs) -> str:
    with pytest.raises(LocalProtocolError) as info:
        build(*args, **kwargs)
    assert info.value.reason is reason, info.value
    return str(info.value)


# -- endpoints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "port", "reason"),
    [
        ("1.2.3.4", 65536, Reason.BAD_ENDPOINT),
        ("1.2.3.4", -1, Reason.BAD_ENDPOINT),
        ("::1", 1, Reason.BAD_ENDPOINT),
        ("1.2.3", 1, Reason.BAD_ENDPOINT),
        ("1.2.3.4", "80", Reason.WRONG_TYPE),
        ("1.2.3.4", True, Reason.WRONG_TYPE),
        (b"\1\2\3\4", 1, Reason.WRONG_TYPE),
    ],
)
def test_endpoint_refuses(ip: object, port: object, reason: Reason) -> None:
    refused(reason, Endpoint, ip, port)


def test_endpoint_bounds_and_tuple_behaviour() -> None:
    assert Endpoint("0.0.0.0", 0) == ("0.0.0.0", 0)
    assert Endpoint("255.255.255.255", 65535).port == 65535
    ip, port = YOU
    assert (ip, port) == ("198.18.0.1", 40000) and repr(YOU).startswith("Endpoint(ip=")
    assert YOU._replace(port=1) == Endpoint("198.18.0.1", 1)


# -- v1 requests and commands ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"", Reason.EMPTY_NAME),
        (b"x" * 101, Reason.NAME_TOO_LONG),
        (b"a\0b", Reason.NUL_IN_NAME),
        ("text", Reason.WRONG_TYPE),
        (bytearray(b"x"), Reason.WRONG_TYPE),
    ],
)
def test_v1_request_refuses(name: object, reason: Reason) -> None:
    refused(reason, V1Request, name)


def test_v1_request_limits() -> None:
    assert V1Request(b"x" * 100).name == b"x" * 100
    assert V1Request(b"\xff").name == b"\xff"  # v1 never promised an encoding


def test_encode_v1_name_refuses_unencodable_text() -> None:
    refused(Reason.NOT_UTF8, encode_v1_name, "\ud800")


def test_the_readers_requests_equal_validated_ones() -> None:
    """The reader's fast constructor builds the same objects the checked one does."""
    built = RequestReader().feed(b"fmi_pair3_5")
    assert type(built) is V1Request
    assert built == V1Request(b"fmi_pair3_5") and hash(built) == hash(V1Request(b"fmi_pair3_5"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = b"other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "name", "reason"),
    [
        ("bogus", b"", Reason.BAD_COMMAND),
        ("delete_pairs", b"x", Reason.BAD_COMMAND),
        ("remove_pair", b"", Reason.BAD_COMMAND),
        ("remove_pair", b"x" * 89, Reason.NAME_TOO_LONG),  # remove_pair_ + 89 > 100 bytes
        ("remove_pair", b"a\0", Reason.NUL_IN_NAME),
    ],
)
def test_command_refuses(kind: str, name: bytes, reason: Reason) -> None:
    refused(reason, Command, kind, name)  # type: ignore[arg-type]


def test_command_limits() -> None:
    assert Command("remove_pair", b"x" * 88).name == b"x" * 88
    assert Command("delete_pairs").name == b""


# -- v2 requests and responses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason", "says"),
    [
        ({"name": ""}, Reason.EMPTY_NAME, "empty"),
        ({"name": "n" * 100}, Reason.NAME_TOO_LONG, "at most 99"),
        ({"name": "é" * 50}, Reason.NAME_TOO_LONG, "got 100"),  # 50 characters, 100 bytes
        ({"name": "a\0b"}, Reason.NUL_IN_NAME, "NUL"),
        ({"name": "\ud800"}, Reason.NOT_UTF8, "UTF-8"),
        ({"name": b"bytes"}, Reason.WRONG_TYPE, "str"),
        ({"name": "ok", "token": "nope"}, Reason.BAD_TOKEN, "not a UUID"),
        ({"name": "ok", "flags": -1}, Reason.BAD_FLAGS, "flags"),
        ({"name": "ok", "flags": 2**32}, Reason.BAD_FLAGS, "flags"),
    ],
)
def test_v2_request_refuses(kwargs: dict, reason: Reason, says: str) -> None:
    assert says in refused(reason, V2Request, **kwargs)


def test_v2_request_limits_and_canonical_token() -> None:
    assert V2Request("n" * 99).name == "n" * 99
    assert V2Request("ok", flags=2**32 - 1).flags == 2**32 - 1
    assert V2Request("ok", TOKEN.upper()).token == TOKEN
    assert V2Request("ok", "{" + TOKEN + "}") == V2Request("ok", TOKEN)


def test_v2_response_refuses() -> None:
    refused(Reason.UNKNOWN_STATUS, V2Response, 9)
    refused(Reason.BAD_ENDPOINT, V2Response, Status.PAIRED, ("1.2.3.4", 70000))
    refused(Reason.WRONG_TYPE, V2Response, Status.PAIRED, YOU, "1.2.3.4:5")
    refused(Reason.BAD_TOKEN, V2Response, Status.WAITING, token="zzz")


def test_v2_response_normalises_what_it_accepts() -> None:
    response = V2Response(1, ("1.2.3.4", 5))  # type: ignore[arg-type]
    assert response.status is Status.PAIRED
    assert type(response.you) is Endpoint and response.you == Endpoint("1.2.3.4", 5)


# -- events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: OwnEndpoint(("1.2.3.4", 1)), Reason.WRONG_TYPE),
        (lambda: Waiting(YOU, "bad"), Reason.BAD_TOKEN),
        (lambda: Paired(YOU, ("1.2.3.4", 1)), Reason.WRONG_TYPE),
        (lambda: TimedOut(YOU, "bad"), Reason.BAD_TOKEN),
        (lambda: ServerError(1), Reason.WRONG_TYPE),
        (lambda: ServerClosed(-1, 8, 0, False), Reason.WRONG_TYPE),
        (lambda: ServerClosed(9, 8, 0, False), Reason.WRONG_SIZE),
        (lambda: ServerClosed(0, 8, 0, None), Reason.WRONG_TYPE),
    ],
    ids=["own", "waiting", "paired", "timed-out", "error", "closed-neg", "closed-big", "closed"],
)
def test_events_refuse(build, reason: Reason) -> None:
    refused(reason, build)


def test_events_are_frozen_and_slotted() -> None:
    event = Paired(YOU, YOU, TOKEN.upper())
    assert event.token == TOKEN  # canonical
    assert not hasattr(event, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.token = ""  # type: ignore[misc]
    for cls in (V1Request, V2Request, Command, V2Response, OwnEndpoint, ServerClosed):
        assert "__slots__" in vars(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "make",
    [
        lambda: V2Request("pair", TOKEN),
        lambda: V2Request("pair", TOKEN.upper()),  # stored canonical: still not shown
        lambda: V2Response(Status.WAITING, YOU, token=TOKEN),
        lambda: Waiting(YOU, TOKEN),
        lambda: Paired(YOU, YOU, TOKEN),
        lambda: TimedOut(YOU, TOKEN),
    ],
)
def test_reconnect_tokens_stay_out_of_reprs(make) -> None:
    """A token lets its holder take over the wait: reprs (logs, tracebacks) never show it."""
    value = make()
    assert value.token == TOKEN  # still there, and still compared
    assert TOKEN not in repr(value) and TOKEN not in str(value)
    assert "token" not in repr(value)
    assert value == make() and dataclasses.replace(value).token == TOKEN
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.token = "x"  # type: ignore[misc]
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(value, token="not a uuid")


def test_a_decoded_request_keeps_its_token_out_of_its_repr() -> None:
    request = RequestReader().feed(V2Request("pair", TOKEN).encode())
    assert isinstance(request, V2Request)  # the server's fast constructor path
    assert request.token == TOKEN and TOKEN not in repr(request)

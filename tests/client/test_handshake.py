"""The link handshake as pure code: byte vectors, every transition, replay, fuzz."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from fmi_client.handshake import (
    _TRANSITIONS,
    HELLO_SIZE,
    PLAIN_BINDING,
    PROOF_SIZE,
    Event,
    Failure,
    Handshake,
    HandshakeError,
    LinkSecret,
    State,
    _hkdf_sha256,
    tls_server_end_point,
    transcript,
)

SECRET = "job-secret-0123456789abcdef"
NONCE_A, NONCE_B = bytes(range(32)), bytes(range(32, 64))
BINDING = tls_server_end_point(b"certificate bytes")


def pair(secret_a=SECRET, secret_b=SECRET, **overrides):
    a = Handshake(LinkSecret(secret_a), "job3_5", 3, 5, BINDING, nonce=NONCE_A)
    b_args = {"pairing": "job3_5", "binding": BINDING} | overrides
    b = Handshake(LinkSecret(secret_b), b_args["pairing"], 5, 3, b_args["binding"], NONCE_B)
    return a, b


def run(a: Handshake, b: Handshake) -> tuple[bytes, bytes]:
    """Shuttle bytes until both are done; returns everything each side sent."""
    sent_a, sent_b = a.start(), b.start()
    proof_a = a.receive_data(sent_b)
    proof_b = b.receive_data(sent_a)
    a.receive_data(proof_b)
    b.receive_data(proof_a)
    return sent_a + proof_a, sent_b + proof_b


def test_hkdf_matches_rfc5869_and_cryptography():
    # RFC 5869, test case 1
    okm = _hkdf_sha256(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    ikm, salt, info = b"some input key", b"salt", b"info"
    theirs = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
    assert _hkdf_sha256(ikm, salt, info) == theirs


def test_byte_vectors():
    a, b = pair()
    wire_a, wire_b = run(a, b)
    assert a.state is b.state is State.DONE
    assert wire_a[:HELLO_SIZE] == b"\x01\x01" + struct.pack("!I", 3) + NONCE_A
    assert wire_b[:HELLO_SIZE] == b"\x01\x01" + struct.pack("!I", 5) + NONCE_B
    # the proofs, computed here from the documented construction
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"fmi-client link-auth v1", info=b"proof key"
    ).derive(SECRET.encode())
    name = b"job3_5"
    expected_transcript = (
        b"fmi-client/link-auth\x01"
        + struct.pack("!H", len(name))
        + name
        + struct.pack("!II", 3, 5)
        + NONCE_A
        + NONCE_B
        + struct.pack("!H", len(BINDING))
        + BINDING
    )
    assert transcript("job3_5", (3, 5), (NONCE_A, NONCE_B), BINDING) == expected_transcript
    for sender, wire in ((3, wire_a), (5, wire_b)):
        mac = hmac.new(key, b"proof" + struct.pack("!I", sender) + expected_transcript, "sha256")
        assert wire[HELLO_SIZE:] == b"\x01\x02" + mac.digest()
        assert len(wire) == HELLO_SIZE + PROOF_SIZE


def test_byte_at_a_time_and_exact_sizes():
    a, b = pair()
    hello_a, hello_b = a.start(), b.start()
    assert a.next_size() == HELLO_SIZE
    out = b""
    for i in range(len(hello_b)):
        out += a.receive_data(hello_b[i : i + 1])
        assert a.next_size() == (HELLO_SIZE - i - 1 if i < HELLO_SIZE - 1 else PROOF_SIZE)
    assert len(out) == PROOF_SIZE and a.state is State.PROOF_SENT
    proof_b = b.receive_data(hello_a)
    a.receive_data(proof_b + b"first user bytes")
    assert a.state is State.DONE and a.trailing == b"first user bytes" and a.next_size() == 0


def expect_failure(step, reason: Failure) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        step()
    assert info.value.reason is reason
    return info.value


def test_wrong_secret_fails_both_sides():
    a, b = pair(secret_b="another-secret-fedcba9876543210")
    hello_a, hello_b = a.start(), b.start()
    proof_a, proof_b = a.receive_data(hello_b), b.receive_data(hello_a)
    expect_failure(lambda: a.receive_data(proof_b), Failure.BAD_PROOF)
    expect_failure(lambda: b.receive_data(proof_a), Failure.BAD_PROOF)
    assert a.state is b.state is State.FAILED


@pytest.mark.parametrize(
    "override", [{"pairing": "job3_50"}, {"binding": tls_server_end_point(b"relay")}]
)
def test_other_pairing_or_binding_fails(override):
    a, b = pair(**override)
    hello_a, hello_b = a.start(), b.start()
    proof_a = a.receive_data(hello_b)
    b.receive_data(hello_a)
    expect_failure(lambda: b.receive_data(proof_a), Failure.BAD_PROOF)


def test_replayed_handshake_is_refused():
    """An eavesdropper replays rank 3's recorded messages to rank 5 in a new session."""
    a, b = pair()
    recorded_a, _ = run(a, b)
    victim = Handshake(LinkSecret(SECRET), "job3_5", 5, 3, BINDING)  # fresh random nonce
    victim.start()
    victim.receive_data(recorded_a[:HELLO_SIZE])
    error = expect_failure(lambda: victim.receive_data(recorded_a[HELLO_SIZE:]), Failure.BAD_PROOF)
    assert victim.state is State.FAILED and "replay" in str(error)


def test_reflected_hello_and_proof_are_refused():
    a = Handshake(LinkSecret(SECRET), "job3_5", 3, 5, BINDING, nonce=NONCE_A)
    hello = a.start()
    # our own HELLO sent back claims our own rank
    expect_failure(lambda: a.receive_data(hello), Failure.WRONG_RANK)
    b = Handshake(LinkSecret(SECRET), "job3_5", 3, 5, BINDING, nonce=NONCE_A)
    b.start()
    echoed = b"\x01\x01" + struct.pack("!I", 5) + NONCE_A
    expect_failure(lambda: b.receive_data(echoed), Failure.REFLECTED)
    # a proof reflected back (made by ourselves, for our own rank) does not pass as the peer's
    c, d = pair()
    c.start()
    own_proof = c.receive_data(d.start())
    expect_failure(lambda: c.receive_data(own_proof), Failure.BAD_PROOF)


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (b"\x02\x01" + bytes(36), Failure.BAD_VERSION, "version 2"),
        (b"\x16\x03\x01\x00", Failure.BAD_VERSION, "encrypt=False"),
        (b"\x01\x02" + bytes(32), Failure.UNEXPECTED_MESSAGE, "type 2"),
        (b"\x01\x09", Failure.UNEXPECTED_MESSAGE, "type 9"),
        (b"\x01\x01" + struct.pack("!I", 4) + NONCE_B, Failure.WRONG_RANK, "rank 4"),
    ],
)
def test_bad_first_messages(data, reason, text):
    a, _ = pair()
    a.start()
    error = expect_failure(lambda: a.receive_data(data), reason)
    assert text in str(error) and "job3_5" in str(error)


def test_transition_table_is_exhaustive():
    """Every (state, event) pair not in the table fails; the table has exactly three."""
    assert set(_TRANSITIONS) == {
        (State.START, Event.START),
        (State.HELLO_SENT, Event.HELLO),
        (State.PROOF_SENT, Event.PROOF),
    }
    a, b = pair()
    run(a, b)
    expect_failure(a.start, Failure.UNEXPECTED_MESSAGE)  # START after DONE
    c, _ = pair()
    c.start()
    expect_failure(c.start, Failure.UNEXPECTED_MESSAGE)


def test_eof_error_names_the_pairing():
    a, _ = pair()
    a.start()
    error = a.eof()
    assert error.reason is Failure.PEER_CLOSED and "job3_5" in str(error)


def test_secret_never_shows():
    secret = LinkSecret(SECRET)
    assert SECRET not in repr(secret) and "hidden" in repr(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    a, _ = pair()
    assert SECRET not in repr(a)
    with pytest.raises(HandshakeError) as info:
        run(*pair(secret_b="another-secret-fedcba9876543210"))
    assert SECRET not in str(info.value) and "fedcba" not in str(info.value)
    with pytest.raises(ValueError, match="at least 16") as short:
        LinkSecret("hunter2")
    assert "hunter2" not in str(short.value)


def test_secret_from_environment():
    assert LinkSecret.from_environ({}) is None
    assert LinkSecret.from_environ({"FMI_SECRET": ""}) is None
    from_env = LinkSecret.from_environ({"FMI_SECRET": SECRET})
    assert from_env is not None and from_env.mac(b"x") == LinkSecret(SECRET).mac(b"x")


@pytest.mark.parametrize(
    ("ranks", "nonce"), [((3, 3), None), ((-1, 2), None), ((1, 2**32), None), ((1, 2), b"x")]
)
def test_bad_construction(ranks, nonce):
    with pytest.raises(ValueError):
        Handshake(LinkSecret(SECRET), "p", ranks[0], ranks[1], PLAIN_BINDING, nonce)


@given(st.binary(max_size=200))
def test_fuzz_stranger_bytes(data):
    """A stranger's bytes: a HandshakeError or more waiting, never an authenticated link."""
    a = Handshake(LinkSecret(SECRET), "job3_5", 3, 5, BINDING)
    a.start()
    try:
        a.receive_data(data)
    except HandshakeError as exc:
        assert isinstance(exc.reason, Failure) and a.state is State.FAILED
        return
    assert a.state in (State.HELLO_SENT, State.PROOF_SENT)


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1))
def test_fuzz_forged_proof(mac, _rank):
    a, b = pair()
    a.start()
    a.receive_data(b.start())
    with pytest.raises(HandshakeError):
        a.receive_data(b"\x01\x02" + mac)


def test_binding_is_a_certificate_hash():
    assert (
        tls_server_end_point(b"der") == b"tls-server-end-point:" + hashlib.sha256(b"der").digest()
    )

"""The server's auth secret and admission policy (rendezvous.credentials)."""

from __future__ import annotations

import re

import pytest

from rendezvous.credentials import (
    NO_CREDENTIAL,
    SECRET_ENV,
    V1_NOT_ALLOWED,
    AuthPolicy,
    AuthSecretError,
    credential_command,
    load_secret,
    load_secrets,
)
from tcpunch.credential import Verdict, verify

SECRET = b"server-secret-0123456789"
NOW = 1_700_000_000.0


def test_secret_from_file_strips_the_newline(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    assert load_secret(path, {SECRET_ENV: "ignored-because-the-file-wins"}) == SECRET


def test_secret_from_environment_or_none():
    assert load_secret(None, {SECRET_ENV: SECRET.decode()}) == SECRET
    assert load_secret(None, {}) is None
    assert load_secret(None, {SECRET_ENV: ""}) is None


def test_secret_errors_say_where_and_never_what(tmp_path):
    with pytest.raises(AuthSecretError, match="cannot read the auth secret file"):
        load_secret(tmp_path / "missing", {})
    weak = tmp_path / "weak"
    weak.write_text("hunter2\n")
    with pytest.raises(AuthSecretError, match="at least 16") as info:
        load_secret(weak, {})
    assert "hunter2" not in str(info.value)


def test_credential_command_mints_with_the_configured_secret(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    credential = credential_command("run-7/", 600, str(path), {}, now=lambda: NOW)
    assert verify(SECRET, credential, "run-7/fmi0_1", NOW + 599) is Verdict.OK
    from_env = credential_command("run-7/", 600, None, {SECRET_ENV: SECRET.decode()}, lambda: NOW)
    assert from_env == credential


def test_credential_command_without_a_secret():
    with pytest.raises(AuthSecretError, match="--auth-secret-file"):
        credential_command("p/", 60, None, {})


def test_policy_v2():
    policy = AuthPolicy.create(SECRET)
    credential = credential_command("job/", 60, None, {SECRET_ENV: SECRET.decode()}, lambda: NOW)
    assert policy.check_v2("job/0_1", credential, NOW).allowed
    assert policy.check_v2("job/0_1", None, NOW).reason == NO_CREDENTIAL
    assert policy.check_v2("job/0_1", credential, NOW + 60).reason == "expired"
    assert policy.check_v2("other/0_1", credential, NOW).reason == "wrong_prefix"
    assert policy.check_v2("job/0_1", "garbage", NOW).reason == "malformed"
    forged = AuthPolicy.create(b"another-secret-abcdefgh")
    assert forged.check_v2("job/0_1", credential, NOW).reason == "forged"


def test_policy_v1_pattern_and_commands():
    closed = AuthPolicy.create(SECRET)
    assert closed.check_v1(b"fmi_pair0_1").reason == V1_NOT_ALLOWED
    legacy = AuthPolicy.create(SECRET, allow_v1=r"legacy-.*")
    assert legacy.check_v1(b"legacy-job0_1").allowed
    assert not legacy.check_v1(b"xlegacy-job0_1").allowed  # the whole name must match
    assert not legacy.check_v1(b"\xff\xfe").allowed
    assert not legacy.check_command("delete_pairs").allowed
    assert legacy.check_command("remove_pair", b"legacy-job0_1").allowed
    assert not legacy.check_command("remove_pair", b"other").allowed


def test_policy_repr_hides_the_secret():
    policy = AuthPolicy.create(SECRET, allow_v1="legacy-.*")
    assert SECRET.decode() not in repr(policy) and "<1 hidden>" in repr(policy)
    with pytest.raises(ValueError, match="regular expression"):
        AuthPolicy.create(SECRET, allow_v1="(")
    with pytest.raises(AuthSecretError):
        AuthPolicy.create(b"short")
    assert isinstance(policy.allow_v1, re.Pattern)


def test_rotation_current_mints_previous_still_verifies(tmp_path):
    new, old = b"new-secret-0123456789", b"old-secret-0123456789"
    path = tmp_path / "secret"
    path.write_bytes(new + b"\n" + old + b"\n\n")
    assert load_secrets(path, {}) == (new, old)
    assert load_secret(path, {}) == new
    minted = credential_command("job/", 60, str(path), {}, now=lambda: NOW)
    assert verify(new, minted, "job/1", NOW) is Verdict.OK  # the current secret mints
    policy = AuthPolicy.create(load_secrets(path, {}) or ())
    from_old = credential_command("job/", 60, None, {SECRET_ENV: old.decode()}, lambda: NOW)
    assert policy.check_v2("job/1", from_old, NOW).allowed
    assert policy.check_v2("job/1", from_old, NOW + 60).reason == "expired"
    assert policy.check_v2("other/1", from_old, NOW).reason == "wrong_prefix"
    stranger = credential_command("job/", 60, None, {SECRET_ENV: "x" * 20}, lambda: NOW)
    assert policy.check_v2("job/1", stranger, NOW).reason == "forged"
    assert "<2 hidden>" in repr(policy)
    assert "new-secret" not in repr(policy) and "old-secret" not in repr(policy)


def test_a_weak_line_is_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_text("a-strong-enough-secret-123\nweak\n")
    with pytest.raises(AuthSecretError, match="line 2"):
        load_secrets(path, {})
    path.write_text("\n\n")
    with pytest.raises(AuthSecretError, match="holds no auth secret"):
        load_secrets(path, {})

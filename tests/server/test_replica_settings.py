"""The replica options' settings: the Redis URL is checked and never shown with its
password; replica ids are checked; none of it imports redis."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rendezvous.cli import main
from rendezvous.settings import Settings, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        ("rediss://user:pw@cache.example:6380/2", "rediss://***@cache.example:6380/2"),
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
        ("redis://10.0.0.5/0?password=pw", "redis://10.0.0.5/0?***"),
        ("redis://:p@ss@host/0", "redis://***@host/0"),
        # a password holding '/', '?' or '#' ends the authority early: still hidden
        ("redis://:pw/x@host:6379/0", "redis://***@host:6379/0"),
        ("redis://user:a?pw@host/0", "redis://***@host/0"),
        ("rediss://:a#pw@host/0", "rediss://***@host/0"),
    ],
)
def test_the_redis_url_is_shown_without_its_secrets(url, shown):
    settings = Settings(redis_url=url)
    assert redact_url(url) == shown
    assert settings.redacted_redis_url == shown
    assert "pw" not in repr(settings) and "ss@" not in repr(settings)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redis_url": "http://:pw@host"}, "is not a Redis URL"),
        ({"redis_url": "localhost:6379"}, "is not a Redis URL"),
        ({"replica_id": "r1"}, "--replica-id only applies with --redis"),
        ({"redis_url": "redis://h/0", "replica_id": "bad id!"}, "use 1-64 of"),
        ({"redis_url": "redis://h/0", "redis_prefix": ""}, "--redis-prefix"),
        ({"relay_advertise": "10.0.0.7"}, "--relay-advertise takes"),
        ({"redis_url": "redis://h/0", "relay_advertise": "a b"}, "--relay-advertise takes"),
    ],
)
def test_bad_replica_options_are_refused_with_what_to_do(options, message):
    with pytest.raises(ValueError, match=message) as info:
        Settings(**options)
    assert "pw" not in str(info.value)


def test_serve_refuses_a_bad_redis_url_before_starting(monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_REDIS_URL", "http://:hunter2@host")
    result = CliRunner().invoke(main, ["serve", "--no-http", "--port", "0"])
    assert result.exit_code == 2
    assert "is not a Redis URL" in result.output
    assert "hunter2" not in result.output

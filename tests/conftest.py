"""Fixtures shared by several test areas. Policy for missing facilities: facilities.py."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest

from tests.processes import moto_process


def _environment() -> dict[str, str]:
    """os.environ less pytest's own PYTEST_CURRENT_TEST (it changes per test phase)."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(autouse=True)
def _no_leaked_environment() -> Iterator[None]:
    """Every test leaves os.environ and the working directory as it found them.

    Tests change the environment only through ``monkeypatch`` (undone before this check
    runs); anything else would leak into the tests after it.
    """
    environ, cwd = _environment(), os.getcwd()
    yield
    after = _environment()
    changed = sorted(
        key for key in environ.keys() | after.keys() if environ.get(key) != after.get(key)
    )
    for key in changed:
        if key in environ:
            os.environ[key] = environ[key]
        else:
            del os.environ[key]
    os.chdir(cwd)
    assert not changed, f"the test changed environment variables it did not restore: {changed}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real moto server process on loopback; yields its endpoint URL.

    Tests talk to it over real HTTP with boto3 (endpoint_url), never in-process mocks.
    Use the ``aws_env`` fixture for a clean account per test.
    """
    with moto_process() as url:
        yield url


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reset moto account and fake credentials in the environment; yields the URL."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_CONFIG_FILE", raising=False)
    return moto_server

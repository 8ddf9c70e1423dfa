"""Fixtures shared by several test areas. Policy for missing facilities: facilities.py."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest

from tests.processes import free_port, moto_process

__all__ = ["free_port"]  # re-exported: tests import it from here


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
    os.environ.pop("AWS_CONFIG_FILE", None)
    return moto_server

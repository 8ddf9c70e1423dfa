"""Fixtures of the client tests: a real rendezvous server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rendezvous.embedded import BackgroundServer


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """The project's rendezvous server on an ephemeral loopback port (v1 and v2)."""
    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as srv:
        yield srv

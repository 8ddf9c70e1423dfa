"""Shared test policy: what a missing facility does (skip locally, fail in CI)."""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("RENDEZVOUS_REQUIRE_ALL", "") not in ("", "0")


def require(condition: bool, what: str) -> None:
    """Skip the test when ``condition`` is false, unless CI asked for everything.

    ``.ci/run`` sets RENDEZVOUS_REQUIRE_ALL=1: there a missing facility (root, network
    namespaces, podman, torch, a DNS server) is a failure, never a silent skip.
    """
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required when RENDEZVOUS_REQUIRE_ALL is set", pytrace=False)
    pytest.skip(f"{what} is not available here")

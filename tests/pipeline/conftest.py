"""Fixtures for the pipeline tests: tiny generated data and a real rendezvous server."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.facilities import require

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def need_torch() -> None:
    require(HAVE_TORCH, "torch")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three partitions (``1.pt``, ``2.pt``, ``10.pt``) of 40 samples each."""
    need_torch()
    from rendezvous_pipeline.data import make_partition, partition_bytes

    root = tmp_path_factory.mktemp("pipeline-data")
    for index, name in enumerate(("1.pt", "2.pt", "10.pt")):
        (root / "parts").mkdir(exist_ok=True)
        (root / "parts" / name).write_bytes(partition_bytes(make_partition(40, 500 + index)))
    (root / "parts" / "notes.txt").write_text("not data")
    return root


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A real rendezvous server on a free loopback port, in this process."""
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        yield server.address


@pytest.fixture
def aws_env(aws_env: str) -> str:
    """The reset moto account, with the permissions boundaries an administrator creates
    once (tests/deploy/world.py: create_boundaries)."""
    from tests.deploy.world import create_boundaries

    create_boundaries(aws_env)
    return aws_env

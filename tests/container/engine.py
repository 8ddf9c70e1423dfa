"""Where the container tests find the image's sources and how they run podman."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
# default_ulimits within the machine's hard limits, and runc (crun fails on our CI).
CONTAINERS_CONF = DOCKER_DIR / "containers.conf"
# docker/Dockerfile labels its build stage, whose image is left behind untagged.
BUILD_STAGE_LABEL = "org.opencontainers.image.title=rendezvous-build-stage"


def podman_env() -> dict[str, str]:
    """The environment every podman command of the tests runs with (nothing in /etc)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def prune_build_stages(docker_client) -> None:
    """Remove the build stage's leftover images (marked by a label in docker/Dockerfile)."""
    docker_client.images.prune(filters={"dangling": True, "label": BUILD_STAGE_LABEL})

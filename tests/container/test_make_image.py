"""`make image`, the command the README gives, builds an image that keeps its health check
(podman drops HEALTHCHECK unless told to build the docker format)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import docker
import pytest

from tests.container.engine import REPO, podman_env, prune_build_stages
from tests.facilities import require

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]


def test_make_image_builds_a_tagged_image_with_its_health_check(
    docker_client, base_image: str, base_python: str
) -> None:
    require(shutil.which("make") is not None, "make")
    tag = f"localhost/rendezvous-make-test:{os.getpid()}"
    try:
        result = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "image",
                "ENGINE=podman",
                f"BASE_IMAGE={base_image}",
                f"RENDEZVOUS_IMAGE={tag}",
                f"WHEEL_PYTHONS={base_python}",
            ],
            cwd=REPO,
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"make image failed:\n{result.stdout}\n{result.stderr}"
        assert f"{tag} is " in result.stdout, result.stdout[-2000:]
        container = docker_client.containers.create(tag)
        try:
            container.reload()
            check = (container.attrs["Config"].get("Healthcheck") or {}).get("Test")
        finally:
            container.remove(force=True)
        assert check and check[0] == "CMD", f"{tag} has no HEALTHCHECK: {check}"
    finally:
        # By tag: the build cache may give this image the same id as the session's.
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag)
        prune_build_stages(docker_client)

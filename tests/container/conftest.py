"""Session fixtures for the container tests: a podman API service, a local base image,
the wheels and the image built from docker/Dockerfile, each made once per session.

CI has no Docker engine and reaches no image registry: podman serves the Docker API on
a private unix socket (the docker SDK uses it as its DOCKER_HOST), and the
base image is Debian bookworm made by debootstrap (docker/local-base-image.sh). The
podman configuration comes from docker/containers.conf via CONTAINERS_CONF, so nothing
in /etc changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.container.engine import DOCKER_DIR, podman_env, prune_build_stages
from tests.facilities import require
from tests.processes import stop

BASE_IMAGE = "localhost/rendezvous-base:bookworm"
HERE = Path(__file__).parent

# On a fresh machine the first test's fixtures debootstrap a base image, fetch wheels
# and build the image (minutes), all inside that test's timeout: give these tests room.
SETUP_TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT_S))


TEST_IMAGE = f"localhost/rendezvous-test:{os.getpid()}"
SERVICE_START_TIMEOUT = 30.0


def _stop(proc: subprocess.Popen) -> None:
    stop(proc, grace=15)


@pytest.fixture(scope="session")
def podman_api() -> Iterator[str]:
    """A private ``podman system service``; yields its DOCKER_HOST URL (unix://...)."""
    require(os.geteuid() == 0, "root (podman's rootful networking and debootstrap)")
    require(shutil.which("podman") is not None, "podman (bash .ci/system-deps)")
    require(shutil.which("runc") is not None, "runc (bash .ci/system-deps)")

    workdir = Path(tempfile.mkdtemp(prefix=f"rendezvous-podman-{os.getpid()}-"))
    url = f"unix://{workdir}/api.sock"
    log = (workdir / "service.log").open("wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env=podman_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while True:
            client = None
            try:
                # The constructor already asks the service for its API version.
                client = docker.DockerClient(base_url=url, timeout=5)
                client.ping()
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (workdir / "service.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"podman system service did not answer on {url} within "
                        f"{SERVICE_START_TIMEOUT:.0f} s ({exc}); its log:\n{text}"
                    ) from None
                time.sleep(0.2)
            finally:
                if client is not None:
                    client.close()
        yield url
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client(podman_api: str):
    """A docker SDK client on the podman service (long timeout: builds take a while)."""
    client = docker.DockerClient(base_url=podman_api, timeout=600)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def base_image(podman_api: str) -> str:
    """Debian bookworm with python3, built once per machine and then reused."""
    require(shutil.which("debootstrap") is not None, "debootstrap (bash .ci/system-deps)")
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "local-base-image.sh"), BASE_IMAGE],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"local-base-image.sh failed:\n{result.stdout}{result.stderr}"
    return BASE_IMAGE


@pytest.fixture(scope="session")
def base_python(docker_client, base_image: str) -> str:
    """The base image's CPython version ("3.11"): the wheels must be built for it."""
    version = docker_client.containers.run(
        base_image,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        remove=True,
    )
    return version.decode().strip()


@pytest.fixture(scope="session")
def image(docker_client, base_image: str, base_python: str) -> Iterator[str]:
    """docker/Dockerfile built on the local base from host-built wheels; yields its tag."""
    wheels = subprocess.run(
        ["bash", str(DOCKER_DIR / "build-wheels.sh"), base_python],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert wheels.returncode == 0, f"build-wheels.sh failed:\n{wheels.stdout}{wheels.stderr}"
    try:
        docker_client.images.build(
            path=str(DOCKER_DIR),
            tag=TEST_IMAGE,
            buildargs={"BASE_IMAGE": base_image},
            rm=True,
            forcerm=True,
        )
        yield TEST_IMAGE
    finally:
        for container in docker_client.containers.list(all=True, filters={"ancestor": TEST_IMAGE}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(TEST_IMAGE)
        prune_build_stages(docker_client)

"""docker/compose.yaml for real: the server and two peers that pair through it with
fmi_client (rendezvous, then a punched TCP connection) and swap a message.

No `docker compose` plugin exists on our machines; Debian's podman-compose runs the same
compose file with podman (the README shows both). The test runs it against the image the
session built, then checks each peer's exit status and output, and the server's count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from testbed.procs import free_port
from tests.container import rawclient
from tests.container.engine import DOCKER_DIR, podman_env
from tests.facilities import require

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

PEER_DEADLINE = 120.0


def compose(project: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman-compose", "-p", project, "-f", str(DOCKER_DIR / "compose.yaml"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def compose_project(docker_client, image: str) -> Iterator[tuple[str, dict[str, str], int]]:
    """`podman-compose up -d` of docker/compose.yaml; yields (project, env, HTTP port)."""
    require(shutil.which("podman-compose") is not None, "podman-compose (bash .ci/system-deps)")
    project = f"rvcompose{os.getpid()}"
    http_port = free_port()
    env = {
        **podman_env(),
        "RENDEZVOUS_IMAGE": image,
        "RENDEZVOUS_HOST_PORT": str(free_port()),
        "RENDEZVOUS_HOST_HTTP_PORT": str(http_port),
        "PAIR_NAME": f"compose_test_pair_{os.getpid()}",
    }
    labels = {"label": f"com.docker.compose.project={project}"}
    try:
        up = compose(project, env, "up", "-d", "--no-build")
        output = f"{up.stdout}\n{up.stderr}"
        assert up.returncode == 0, f"podman-compose up failed:\n{output}"
        servers = [
            c
            for c in docker_client.containers.list(filters=labels)  # running ones only
            if c.labels.get("com.docker.compose.service") == "server"
        ]
        # podman-compose goes on (and exits 0) when a container fails to start: say so here,
        # not later as a peer's "cannot resolve 'server'".
        assert servers, f"the server container is not running after `up`:\n{output[-3000:]}"
        yield project, env, http_port
    finally:
        compose(project, env, "down")
        for container in docker_client.containers.list(all=True, filters=labels):
            container.remove(force=True)
        for network in docker_client.networks.list(filters=labels):
            network.remove()


def test_compose_peers_pair_and_exchange_a_message(docker_client, compose_project) -> None:
    project, _, http_port = compose_project
    labels = {"label": f"com.docker.compose.project={project}"}
    containers = {
        c.labels["com.docker.compose.service"]: c
        for c in docker_client.containers.list(all=True, filters=labels)
    }
    assert set(containers) == {"server", "peer-alice", "peer-bob"}, containers

    deadline = time.monotonic() + PEER_DEADLINE
    for service in ("peer-alice", "peer-bob"):
        peer = containers[service]
        while True:
            peer.reload()
            if peer.status in ("exited", "stopped") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        logs = peer.logs().decode(errors="replace")
        assert peer.status in ("exited", "stopped"), f"{service} still {peer.status}:\n{logs}"
        assert peer.attrs["State"]["ExitCode"] == 0, f"{service} failed:\n{logs}"
    alice = containers["peer-alice"].logs().decode(errors="replace")
    bob = containers["peer-bob"].logs().decode(errors="replace")
    assert "received 'hello from bob'" in alice, alice
    assert "received 'hello from alice'" in bob, bob

    containers["server"].reload()
    assert containers["server"].status == "running"
    metrics = rawclient.wait_http_ok(http_port, "/metrics", timeout=30)
    assert rawclient.metric_value(metrics, 'rendezvous_pairings_total{protocol="v2"}') == 1

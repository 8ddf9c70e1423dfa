"""The server image for real: built from docker/Dockerfile, run with published ports,
paired through from the host (v1 and v2), its metrics read, and stopped with SIGTERM."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tcpunch import Status
from tests.container import rawclient

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

MAX_IMAGE_BYTES = 200 * 1000 * 1000
_names = itertools.count()


@dataclass
class Running:
    """A server container and the host ports its two ports are published on."""

    container: object
    port: int
    http_port: int

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


def _host_port(container, exposed: str) -> int:
    bindings = container.attrs["NetworkSettings"]["Ports"].get(exposed) or []
    assert bindings, f"{exposed} is not published: {container.attrs['NetworkSettings']['Ports']}"
    return int(bindings[0]["HostPort"])


def start_server(docker_client, image: str, **run_options) -> Running:
    """Run the image detached, ports published on ephemeral loopback ports; wait for /livez."""
    container = docker_client.containers.run(
        image,
        detach=True,
        name=f"rendezvous-test-{os.getpid()}-{next(_names)}",
        ports={"10000/tcp": ("127.0.0.1", None), "10001/tcp": ("127.0.0.1", None)},
        **run_options,
    )
    try:
        container.reload()
        running = Running(
            container, _host_port(container, "10000/tcp"), _host_port(container, "10001/tcp")
        )
        try:
            rawclient.wait_http_ok(running.http_port, "/livez", timeout=60)
        except TimeoutError as exc:
            container.reload()
            raise AssertionError(
                f"{exc}; container {container.status}, logs:\n{running.logs()[-3000:]}"
            ) from None
        return running
    except BaseException:
        container.remove(force=True)
        raise


@pytest.fixture
def server(docker_client, image: str) -> Iterator[Running]:
    running = start_server(docker_client, image)
    try:
        yield running
    finally:
        running.container.remove(force=True)


def log_events(text: str) -> list[dict]:
    """The server's JSON log lines (anything else on stderr is skipped)."""
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            events.append(record)
    return events


def test_image_is_small_unprivileged_and_drop_in(docker_client, image: str) -> None:
    attrs = docker_client.images.get(image).attrs
    size = attrs["Size"]
    print(f"image size: {size / 1e6:.1f} MB")
    assert size <= MAX_IMAGE_BYTES, f"the image is {size / 1e6:.1f} MB, over 200 MB"
    config = attrs["Config"]
    assert config["User"] not in ("", "root", "0"), config["User"]
    assert {"10000/tcp", "10001/tcp", "10002/tcp"} <= set(config["ExposedPorts"])
    assert "PORT=10000" in config["Env"]
    # Exec form, so the server is PID 1 and SIGTERM reaches it.
    assert config["Entrypoint"] == ["rendezvous"]
    assert config["Cmd"] == ["serve"]


def test_runs_as_non_root_and_health_check_needs_no_curl(server: Running) -> None:
    container = server.container
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] != "0", f"the server runs as root: {uid_line}"
    cmdline = container.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")
    assert b"serve" in cmdline, f"PID 1 is not the server: {cmdline}"

    check = container.attrs["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD", check
    assert not any("curl" in part for part in check), check
    assert container.exec_run(["sh", "-c", "command -v curl"]).exit_code != 0
    healthy = container.exec_run(check[1:])
    assert healthy.exit_code == 0, healthy.output.decode(errors="replace")
    # The same check against a port nothing listens on must fail, or it proves nothing.
    broken = container.exec_run(check[1:], environment={"RENDEZVOUS_HTTP_PORT": "9"})
    assert broken.exit_code != 0


def test_health_endpoints_answer_through_published_port(server: Running) -> None:
    assert rawclient.http_get(server.http_port, "/livez")[0] == 200
    assert rawclient.wait_http_ok(server.http_port, "/readyz", timeout=30)
    status, body = rawclient.http_get(server.http_port, "/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"


def test_pairs_v1_clients_from_host(server: Running) -> None:
    name = f"container_v1_pair_{os.getpid()}"
    with rawclient.connect(server.port) as first, rawclient.connect(server.port) as second:
        first_seen = rawclient.v1_hello(first, name)
        second_seen = rawclient.v1_hello(second, name)
        assert rawclient.v1_peer(first) == second_seen
        assert rawclient.v1_peer(second) == first_seen
        assert first_seen != second_seen
        # The pairing is over: the server closes both connections.
        first.settimeout(10)
        assert first.recv(1) == b""


def test_pairs_v2_clients_from_host(server: Running) -> None:
    name = f"container_v2_pair_{os.getpid()}"
    with rawclient.connect(server.port) as waiter, rawclient.connect(server.port) as newcomer:
        waiting = rawclient.v2_request(waiter, name)
        assert waiting.status is Status.WAITING
        assert waiting.token
        paired_now = rawclient.v2_request(newcomer, name)
        assert paired_now.status is Status.PAIRED
        assert paired_now.peer == waiting.you
        paired_later = rawclient.v2_response(waiter)
        assert paired_later.status is Status.PAIRED
        assert paired_later.peer == paired_now.you


def test_metrics_count_pairings_by_protocol(server: Running) -> None:
    sample = 'rendezvous_pairings_total{protocol="%s"}'
    _, before = rawclient.http_get(server.http_port, "/metrics")
    assert rawclient.metric_value(before, sample % "v1") == 0
    assert rawclient.metric_value(before, sample % "v2") == 0
    with rawclient.connect(server.port) as a, rawclient.connect(server.port) as b:
        rawclient.v1_hello(a, "metrics_v1_pair")
        rawclient.v1_hello(b, "metrics_v1_pair")
        rawclient.v1_peer(a)
        rawclient.v1_peer(b)
    with rawclient.connect(server.port) as a, rawclient.connect(server.port) as b:
        assert rawclient.v2_request(a, "metrics_v2_pair").status is Status.WAITING
        assert rawclient.v2_request(b, "metrics_v2_pair").status is Status.PAIRED
        assert rawclient.v2_response(a).status is Status.PAIRED
    _, after = rawclient.http_get(server.http_port, "/metrics")
    assert rawclient.metric_value(after, sample % "v1") == 1
    assert rawclient.metric_value(after, sample % "v2") == 1


def test_sigterm_drains_and_exits_zero(server: Running) -> None:
    container = server.container
    with rawclient.connect(server.port) as waiter:
        # A client in flight while the server drains.
        assert rawclient.v2_request(waiter, "drain_waiting_pair").status is Status.WAITING
        container.stop(timeout=30)  # SIGTERM (the image's STOPSIGNAL), SIGKILL after 30 s
        result = container.wait(timeout=60)
        # The drain closes the waiter's connection (a response first is fine too).
        waiter.settimeout(10)
        try:
            rest = waiter.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert len(rest) in (0, 51), rest
    assert result["StatusCode"] == 0, f"exit status {result}; logs:\n{server.logs()[-3000:]}"
    events = [record.get("event") for record in log_events(server.logs())]
    assert "draining" in events, server.logs()[-3000:]
    assert "drained" in events, server.logs()[-3000:]
    assert events.index("draining") < events.index("drained")


def test_port_env_moves_the_rendezvous_port(docker_client, image: str) -> None:
    """PORT, as the tcpunch image took it, still decides the rendezvous port."""
    container = docker_client.containers.run(
        image,
        detach=True,
        name=f"rendezvous-test-{os.getpid()}-{next(_names)}",
        environment={"PORT": "12345"},
        ports={"12345/tcp": ("127.0.0.1", None), "10001/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        port = _host_port(container, "12345/tcp")
        rawclient.wait_http_ok(_host_port(container, "10001/tcp"), "/livez", timeout=60)
        with rawclient.connect(port) as client:
            assert rawclient.v2_request(client, "port_env_pair").status is Status.WAITING
    finally:
        container.remove(force=True)

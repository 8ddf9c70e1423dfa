"""`serve --relay-advertise auto`: the task's private IP from the ECS task metadata
endpoint v4 (what `rendezvous-deploy server up --replicas N` sets), served here by a real
HTTP server on loopback with a container document shaped like ECS's."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rendezvous import task_address
from testbed.procs import free_port
from testbed.redis_server import RedisServer
from tests.facilities import require
from tests.server.serverproc import clean_env, running

# A Fargate container's metadata document (trimmed; same shape).
DOCUMENT = {
    "DockerId": "cd189a933e5849daa93386466019ab50-2495160603",
    "Name": "rendezvous",
    "Networks": [
        {
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.0.2.106"],
            "AttachmentIndex": 0,
            "IPv4SubnetCIDRBlock": "10.0.2.0/24",
            "PrivateDNSName": "ip-10-0-2-106.us-west-2.compute.internal",
        }
    ],
}


@contextmanager
def metadata_endpoint(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v4/cd189a933e58"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_auto_reads_the_task_address_from_the_metadata_endpoint() -> None:
    with metadata_endpoint(json.dumps(DOCUMENT).encode()) as uri:
        found = task_address.resolve("auto", {task_address.METADATA_ENV: uri})
    assert found == "10.0.2.106"


def test_other_values_pass_through() -> None:
    assert task_address.resolve("10.1.2.3", {}) == "10.1.2.3"
    assert task_address.resolve(None, {task_address.METADATA_ENV: "http://x"}) is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"x" * (task_address.MAX_BYTES + 1), "exceeds"),
        (json.dumps({"Networks": [{"IPv4Addresses": ["fe80::1"]}]}).encode(), "no IPv4"),
        (json.dumps({"Networks": []}).encode(), "no IPv4"),
        (b"<html>", "not ECS's"),
        (b"[1, 2]", "not ECS's"),
    ],
)
def test_bad_documents_are_refused(body: bytes, says: str) -> None:
    with metadata_endpoint(body) as uri, pytest.raises(ValueError, match=says):
        task_address.resolve("auto", {task_address.METADATA_ENV: uri})


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.1.1"])
def test_an_address_no_replica_reaches_is_refused(address: str) -> None:
    document = {"Networks": [{"IPv4Addresses": [address]}]}
    with (
        metadata_endpoint(json.dumps(document).encode()) as uri,
        pytest.raises(ValueError, match=f"names {address}, which other replicas"),
    ):
        task_address.resolve("auto", {task_address.METADATA_ENV: uri})


@contextmanager
def dripping_endpoint() -> Iterator[str]:
    """An HTTP server that sends its headers, then one byte of body every 0.5 s: each
    read succeeds within the socket timeout, the whole never ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(0.5):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v4/x"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)


def test_a_dripping_endpoint_cannot_stall_start_up() -> None:
    began = time.monotonic()
    with dripping_endpoint() as uri, pytest.raises(ValueError, match="within 5 s"):
        task_address.resolve("auto", {task_address.METADATA_ENV: uri})
    assert time.monotonic() - began < task_address.DEADLINE + 2 * task_address.TIMEOUT


def test_a_proxy_in_the_environment_is_not_used() -> None:
    """An HTTP_PROXY in the task's environment must neither see nor answer the request
    for the link-local endpoint (a fresh process: urllib reads proxies at start)."""
    proxied = json.dumps({"Networks": [{"IPv4Addresses": ["10.9.9.9"]}]}).encode()
    with (
        metadata_endpoint(json.dumps(DOCUMENT).encode()) as uri,
        metadata_endpoint(proxied) as proxy,
    ):
        proxy_root = proxy.rsplit("/v4/", 1)[0]
        env = {**clean_env(), "http_proxy": proxy_root, "HTTP_PROXY": proxy_root}
        env.pop("no_proxy", None)
        env.pop("NO_PROXY", None)
        code = (
            "import sys; from rendezvous import task_address; "
            "print(task_address.resolve('auto', {task_address.METADATA_ENV: sys.argv[1]}))"
        )
        found = subprocess.run(
            [sys.executable, "-c", code, uri],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "10.0.2.106"


def test_an_unreachable_or_odd_endpoint_is_refused() -> None:
    closed = f"http://127.0.0.1:{free_port()}/v4/x"
    with pytest.raises(ValueError, match="did not answer"):
        task_address.resolve("auto", {task_address.METADATA_ENV: closed})
    with pytest.raises(ValueError, match="not an http:// URL"):
        task_address.resolve("auto", {task_address.METADATA_ENV: "file:///etc/passwd"})


def test_serve_advertises_the_task_address(tmp_path: Path) -> None:
    require(shutil.which("redis-server") is not None, "redis-server (apt-get install it)")
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with metadata_endpoint(json.dumps(DOCUMENT).encode()) as uri:
            env = clean_env(**{task_address.METADATA_ENV: uri})
            args = (
                "--port",
                "0",
                "--http-port",
                "0",
                "--redis",
                redis.url,
                "--relay-advertise",
                "auto",
            )
            with running(*args, env=env) as (_proc, listening):
                assert listening["relay_advertise"] == "10.0.2.106"
    finally:
        redis.stop()

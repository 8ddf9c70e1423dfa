"""`rendezvous serve --redis` replica processes and raw TCPunch clients for the tests."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tcpunch import (
    V2_RESPONSE_SIZE,
    Endpoint,
    Status,
    V2Response,
    decode_v2_response,
    encode_v2_request,
    unpack_endpoint,
)
from tests.server.serverproc import CMD, clean_env, http_get


class ReplicaProcess:
    """One ``rendezvous serve --redis URL`` on free loopback ports; its log in a file
    (a pipe nobody reads would fill and block the server)."""

    def __init__(self, workdir: Path, name: str, redis_url: str, *args: str) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        listen = ["--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [*CMD, "serve", *listen, "--redis", redis_url, "--replica-id", name, *args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=clean_env(),
            )
        listening = self._wait_for("listening", 20)
        self.port: int = listening["port"]
        self.http_port: int = listening["http_port"]

    def records(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def _wait_for(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records() if r.get("event") == event]
            if found:
                return found[0]
            assert self.proc.poll() is None, f"{self.name} exited: {self.log_path.read_text()}"
            time.sleep(0.05)
        raise AssertionError(f"{self.name} logged no {event!r} in {timeout} s")

    def wait_for_record(self, event: str, pairing: str, timeout: float = 5) -> dict:
        """The log line ``event`` for ``pairing`` (lines reach the file in batches)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("event") == event and record.get("pairing") == pairing:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"{self.name} logged no {event!r} for {pairing!r}")

    def readyz(self) -> int:
        return http_get(self.http_port, "/readyz")

    def wait_ready(self, ready: bool = True, timeout: float = 20) -> None:
        want = 200 if ready else 503
        deadline = time.monotonic() + timeout
        while self.readyz() != want:
            assert time.monotonic() < deadline, f"{self.name}: /readyz never {want}"
            time.sleep(0.05)

    def health(self) -> dict:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/health", timeout=5
            ) as r:
                return dict(json.load(r))
        except urllib.error.HTTPError as exc:  # 503 while not ready, with the same JSON
            return dict(json.load(exc))

    def metric(self, name: str) -> float:
        import urllib.request

        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not in /metrics")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def replica_processes(
    workdir: Path, redis_url: str, count: int, *args: str
) -> Iterator[list[ReplicaProcess]]:
    group: list[ReplicaProcess] = []
    try:
        for i in range(count):
            group.append(ReplicaProcess(workdir, f"r{i}", redis_url, *args))
        for replica in group:
            replica.wait_ready()
        yield group
    finally:
        for replica in group:
            replica.stop()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


class Client:
    """One raw TCPunch client (v1 or v2) with a receive deadline."""

    def __init__(
        self,
        port: int,
        name: str,
        protocol: str,
        token: str = "",
        timeout: float = 10,
        flags: int = 0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.me = Endpoint(*self.sock.getsockname()[:2])
        self.protocol = protocol
        request = name.encode() if protocol == "v1" else encode_v2_request(name, token, flags)
        self.sock.sendall(request)

    def v2(self) -> V2Response:
        return decode_v2_response(recv_exactly(self.sock, V2_RESPONSE_SIZE))

    def v1(self) -> Endpoint:
        return unpack_endpoint(recv_exactly(self.sock, 8))

    def waiting(self) -> str:
        """The v2 WAITING answer's token, or the v1 own-endpoint answer."""
        if self.protocol == "v1":
            assert self.v1() == self.me
            return ""
        response = self.v2()
        assert response.status is Status.WAITING, response
        return response.token

    def paired(self, *, newcomer: bool) -> Endpoint:
        """The peer named in the PAIRED answer (v1 newcomer: own endpoint first)."""
        if self.protocol == "v1":
            if newcomer:
                assert self.v1() == self.me
            return self.v1()
        return self.paired_v2().peer

    def paired_v2(self) -> V2Response:
        """The whole PAIRED answer of a v2 client (its peer's NAT class included)."""
        response = self.v2()
        assert response.status is Status.PAIRED, response
        assert response.you == self.me
        return response

    def closed(self) -> bool:
        """Whether the server closed the connection (after what it had sent)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

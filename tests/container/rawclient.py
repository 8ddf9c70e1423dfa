"""Bare rendezvous clients for tests from the host: the tcpunch codec over plain sockets.

No punching here: the tests check what the server in the container says (the endpoints
and statuses), through its published port, independent of the client library.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from tcpunch import (
    ENDPOINT_SIZE,
    V2_RESPONSE_SIZE,
    Endpoint,
    V2Response,
    decode_v2_response,
    encode_v1_name,
    encode_v2_request,
    unpack_endpoint,
)


def recv_exact(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    """Exactly ``size`` bytes, or an error saying how many came before EOF/timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(data)} of {size} bytes within {timeout} s")
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def v1_hello(sock: socket.socket, name: str) -> Endpoint:
    """Send a v1 name; returns the endpoint the server saw for us."""
    sock.sendall(encode_v1_name(name))
    return unpack_endpoint(recv_exact(sock, ENDPOINT_SIZE))


def v1_peer(sock: socket.socket) -> Endpoint:
    """The peer's endpoint, sent when the other client of the pairing arrives."""
    return unpack_endpoint(recv_exact(sock, ENDPOINT_SIZE))


def v2_request(sock: socket.socket, name: str) -> V2Response:
    sock.sendall(encode_v2_request(name))
    return v2_response(sock)


def v2_response(sock: socket.socket) -> V2Response:
    return decode_v2_response(recv_exact(sock, V2_RESPONSE_SIZE))


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; HTTP errors are returned too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http_ok(port: int, path: str, timeout: float = 30.0) -> str:
    """Poll until GET path answers 200; returns the body. Raises with the last error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(port, path, timeout=2.0)
            if status == 200:
                return body
            last = f"HTTP {status}: {body.strip()[:200]}"
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"GET :{port}{path} did not answer 200 within {timeout} s (last: {last})")


def metric_value(metrics_text: str, sample: str) -> float:
    """The value of one Prometheus sample line, e.g. 'x_total{protocol="v1"}'."""
    for line in metrics_text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise KeyError(f"{sample} is not in the metrics:\n{metrics_text[:2000]}")

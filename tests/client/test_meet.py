"""fmi_client.meet over real sockets against a scripted v2 server: the resume paths our
own server does not produce on demand (a drop while a token is known, ERROR to a stale
token, garbage), each checked on the bytes the client sent."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fmi_client.errors import RendezvousRefused, RendezvousUnreachable
from fmi_client.meet import exchange_for, meet
from tcpunch import (
    V2_REQUEST_SIZE,
    Endpoint,
    Status,
    V2Request,
    V2Response,
    decode_v2_request,
    encode_v2_response,
)

TOKEN = "0f0e0d0c-0b0a-4908-8706-050403020100"
PEER = Endpoint("198.18.0.2", 40001)
NOBODY = Endpoint("0.0.0.0", 0)


class ScriptedV2Server:
    """Answers connection i with ``script[i]`` (bytes, then close); records each request."""

    def __init__(self, script: list[bytes]) -> None:
        self.script = script
        self.requests: list[V2Request] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.address = self.listener.getsockname()[:2]
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        for reply in self.script:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                raw = b""
                while len(raw) < V2_REQUEST_SIZE:
                    chunk = conn.recv(V2_REQUEST_SIZE - len(raw))
                    if not chunk:
                        break
                    raw += chunk
                self.requests.append(decode_v2_request(raw))
                conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=15)


def response(status: Status, token: str = "", peer: Endpoint = NOBODY) -> bytes:
    return encode_v2_response(V2Response(status, Endpoint("127.0.0.1", 1), peer, token))


def run(script: list[bytes], timeout: float = 10.0) -> tuple[object, list[V2Request]]:
    server = ScriptedV2Server(script)
    try:
        try:
            meeting = meet(
                exchange_for("scripted", "v2"),
                "scripted",
                server.address,
                time.monotonic() + timeout,
                timeout,
            )
        except Exception as exc:
            return exc, server.requests
        meeting.sock.close()
        return meeting, server.requests
    finally:
        server.close()


def test_drop_with_a_token_resumes_with_it_and_stale_token_error_starts_fresh() -> None:
    outcome, requests = run(
        [
            response(Status.WAITING, TOKEN),  # then the connection drops
            response(Status.ERROR),  # the server no longer knows the token
            response(Status.PAIRED, TOKEN, PEER),
        ]
    )
    assert [request.token for request in requests] == ["", TOKEN, ""]
    assert all(request.name == "scripted" for request in requests)
    assert getattr(outcome, "peer", None) == PEER


def test_timeout_resumes_with_the_token() -> None:
    outcome, requests = run([response(Status.TIMEOUT, TOKEN), response(Status.PAIRED, TOKEN, PEER)])
    assert [request.token for request in requests] == ["", TOKEN]
    assert getattr(outcome, "peer", None) == PEER


@pytest.mark.parametrize(
    ("reply", "error", "says"),
    [
        (response(Status.ERROR), RendezvousRefused, "answered ERROR to a fresh v2 request"),
        (b"", RendezvousRefused, "it closed the connection: EOF after 0 of 51 bytes"),
        (b"\x09" + response(Status.WAITING)[1:], RendezvousUnreachable, "unknown v2 status 9"),
        (b"HTTP/1.1 404 Not Found\r\n".ljust(60, b"x"), RendezvousUnreachable, "HTTP port"),
        (response(Status.WAITING)[:20], RendezvousUnreachable, "EOF after 20 of 51 bytes"),
        (response(Status.WAITING), RendezvousUnreachable, "EOF after 0 of 51 bytes"),
    ],
    ids=["error", "close", "status", "http", "partial", "tokenless-waiting-then-close"],
)
def test_final_ends_of_a_fresh_request(reply: bytes, error: type, says: str) -> None:
    outcome, requests = run([reply])
    assert isinstance(outcome, error) and says in str(outcome), outcome
    assert "'scripted'" in str(outcome) and len(requests) == 1

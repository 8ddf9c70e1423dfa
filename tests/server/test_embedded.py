"""BackgroundServer: the in-process server that synchronous code and other areas use."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import pytest

from rendezvous.embedded import BackgroundServer
from tcpunch import Status, decode_v2_response, encode_v2_request, unpack_endpoint


def test_background_server_pairs_v1_and_v2():
    before = threading.active_count()
    with BackgroundServer() as server:
        host, port = server.address.rsplit(":", 1)
        assert (host, int(port)) == ("127.0.0.1", server.port) and server.port > 0
        with socket.create_connection((host, server.port), timeout=5) as a:
            a.sendall(b"embedded_pair")
            assert unpack_endpoint(a.recv(8, socket.MSG_WAITALL)).port == a.getsockname()[1]
            with socket.create_connection((host, server.port), timeout=5) as b:
                b.sendall(encode_v2_request("embedded_pair"))
                paired = decode_v2_response(b.recv(51, socket.MSG_WAITALL))
                assert paired.status is Status.PAIRED
                assert paired.peer.port == a.getsockname()[1]
            assert unpack_endpoint(a.recv(8, socket.MSG_WAITALL)) == paired.you
        url = f"http://127.0.0.1:{server.http_port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.load(response)["pairings"] == 1
    server.close()  # idempotent
    assert threading.active_count() == before


def test_settings_pass_through_and_no_http():
    with BackgroundServer(http_port=None, peer_timeout=0.2) as server:
        assert server.http_port is None
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as a:
            a.sendall(encode_v2_request("embedded_timeout"))
            assert decode_v2_response(a.recv(51, socket.MSG_WAITALL)).status is Status.WAITING
            timeout = decode_v2_response(a.recv(51, socket.MSG_WAITALL))
            assert timeout.status is Status.TIMEOUT


def test_port_in_use_is_reported():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="failed to start"):
            BackgroundServer(port=port, http_port=None)


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="peer_timeout"):
        BackgroundServer(peer_timeout=0)

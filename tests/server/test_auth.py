"""A server started with an auth secret, as a real process over real sockets: who gets on,
who is refused (counted in /metrics by reason), and that no credential reaches its log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmi_client import pair
from tcpunch import Status, V2Response, decode_v2_response, encode_v2_request
from tcpunch.credential import mint
from testbed.procs import free_port
from tests.server.serverproc import CMD, clean_env, running

SECRET = "server-secret-0123456789-abcdef"
OTHER_SECRET = "another-secret-9876543210-zyxwv"


def unique(stem: str) -> str:
    return f"{stem}{os.getpid()}-{time.monotonic_ns()}"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def credential_for(prefix: str, *, secret: str = SECRET, ttl: int = 600, age: float = 0) -> str:
    return mint(secret.encode(), prefix, ttl, time.time() - age)


def v2_exchange(port: int, wire: bytes, replies: int = 1) -> list[V2Response]:
    """Send one request; the v2 responses read until ``replies`` or the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        out = []
        for _ in range(replies):
            data = sock.recv(51, socket.MSG_WAITALL)
            if not data:
                break
            out.append(decode_v2_response(data))
        if out and out[-1].status is Status.ERROR:
            assert sock.recv(1) == b""  # ERROR, then the server closes
        return out


def v1_exchange(port: int, name: bytes) -> bytes:
    """A v1 name; the server's first 8 bytes (b"" when it closes at once: refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(name)
        return sock.recv(8, socket.MSG_WAITALL)


def metrics(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("rendezvous_rejected_total{"):
            key, value = line.rsplit(" ", 1)
            out[key.split('"')[1]] = float(value)
    return out


def stop_and_read_log(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    return [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]


@pytest.fixture
def auth_server(secret_file: Path) -> Iterator[tuple[subprocess.Popen[str], dict, int, int]]:
    port, http_port = free_port(), free_port()
    args = [
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--auth-secret-file",
        str(secret_file),
        "--allow-v1",
        "legacy-.*",
        "--peer-timeout",
        "0.5",
    ]
    with running(*args) as (proc, record):
        yield proc, record, port, http_port


def test_listening_line_says_auth_is_on_and_never_the_secret(auth_server) -> None:
    _proc, record, _port, _http = auth_server
    assert record["auth"] is True and record["allow_v1"] == "legacy-.*"
    assert SECRET not in json.dumps(record)


def test_refusals_are_counted_and_the_credential_is_never_logged(auth_server) -> None:
    proc, _record, port, http_port = auth_server
    job = unique("job-") + "/"
    name = job + "0-1"
    refused = {
        "no_credential": encode_v2_request(name),
        "expired": encode_v2_request(name, credential=credential_for(job, ttl=60, age=3600)),
        "forged": encode_v2_request(name, credential=credential_for(job, secret=OTHER_SECRET)),
        "wrong_prefix": encode_v2_request(name, credential=credential_for("other-job/")),
        "malformed": encode_v2_request(name, credential="not-a-credential"),
    }
    before = metrics(http_port)
    for reason, wire in refused.items():
        [response] = v2_exchange(port, wire)
        assert response.status is Status.ERROR, reason
    # v1 cannot carry a credential: only names matching --allow-v1 get on.
    assert v1_exchange(port, unique("fmi_pair").encode()) == b""
    assert len(v1_exchange(port, unique("legacy-").encode())) == 8  # waiting: its endpoint
    assert v1_exchange(port, b"delete_pairs") == b""
    assert v1_exchange(port, b"remove_pair_" + unique("fmi").encode()) == b""
    after = metrics(http_port)
    expected = dict.fromkeys(refused, 1.0) | {"v1_not_allowed": 3.0}
    for reason, count in expected.items():
        assert after[reason] - before[reason] == count, reason
    credentials = [wire[143:].decode() for wire in refused.values() if len(wire) > 141]
    log = stop_and_read_log(proc)
    text = json.dumps(log)
    for credential in credentials:
        assert credential not in text and credential.rsplit(":", 1)[-1] not in text
    assert SECRET not in text and OTHER_SECRET not in text
    reasons = [e["reason"] for e in log if e.get("event") == "refused"]
    for reason in expected:
        assert reason in reasons
    assert any("without a credential" in str(e.get("detail")) for e in log)


def test_valid_credentials_pair_and_resume_with_their_token(auth_server) -> None:
    proc, _record, port, http_port = auth_server
    job = unique("job-") + "/"
    credential = credential_for(job)
    name = job + "0-1"
    # A lone waiter: WAITING with a token, then TIMEOUT (0.5 s); the resume carries the
    # credential again and is admitted; without it the resume is refused.
    waiting, timeout = v2_exchange(port, encode_v2_request(name, credential=credential), 2)
    assert waiting.status is Status.WAITING and timeout.status is Status.TIMEOUT
    [refused] = v2_exchange(port, encode_v2_request(name, timeout.token))
    assert refused.status is Status.ERROR
    with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
        first.sendall(encode_v2_request(name, timeout.token, credential=credential))
        resumed = decode_v2_response(first.recv(51, socket.MSG_WAITALL))
        assert resumed.status is Status.WAITING and resumed.token == timeout.token
        [paired] = v2_exchange(port, encode_v2_request(name, credential=credential))
        assert paired.status is Status.PAIRED
        assert decode_v2_response(first.recv(51, socket.MSG_WAITALL)).status is Status.PAIRED
    assert metrics(http_port)["no_credential"] == 1
    log = stop_and_read_log(proc)
    assert credential not in json.dumps(log)
    assert [e["pairing"] for e in log if e.get("event") == "paired"] == [name]


def test_the_cli_mints_a_credential_that_pair_uses(secret_file: Path) -> None:
    """`rendezvous credential` (secret from the file, or from the variable) -> pair()."""
    job = unique("run-") + "/"
    from_file = subprocess.run(
        [
            *CMD,
            "credential",
            "--prefix",
            job,
            "--ttl",
            "120",
            "--auth-secret-file",
            str(secret_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=True,
    ).stdout.strip()
    from_env = subprocess.run(
        [*CMD, "credential", "--prefix", job, "--ttl", "120"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(RENDEZVOUS_AUTH_SECRET=SECRET),
        check=True,
    ).stdout.strip()
    assert from_file.split(":")[1] == from_env.split(":")[1] == job
    port = free_port()
    env = clean_env(RENDEZVOUS_AUTH_SECRET=SECRET)  # the server takes it from the variable
    with running("--port", str(port), "--no-http", env=env) as (proc, record):
        assert record["auth"] is True
        sockets: dict[int, socket.socket] = {}
        threads = [
            threading.Thread(
                target=lambda i, c: sockets.__setitem__(
                    i, pair(f"{job}0-1", "127.0.0.1", port, timeout=20, credential=c)
                ),
                args=(i, c),
            )
            for i, c in enumerate([from_file, from_env])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert sorted(sockets) == [0, 1]
            sockets[0].sendall(b"minted by the cli")
            assert sockets[1].recv(64) == b"minted by the cli"
        finally:
            for sock in sockets.values():
                sock.close()
        log = stop_and_read_log(proc)
    assert from_file not in json.dumps(log) and SECRET not in json.dumps(log)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--prefix", "p/"], {}, "no auth secret: pass --auth-secret-file"),
        (["--prefix", "p/", "--ttl", "0"], {"RENDEZVOUS_AUTH_SECRET": SECRET}, "--ttl"),
        (["--prefix", "", "--ttl", "5"], {"RENDEZVOUS_AUTH_SECRET": SECRET}, "must not be empty"),
        (["--prefix", "p/"], {"RENDEZVOUS_AUTH_SECRET": "short"}, "at least 16"),
    ],
)
def test_credential_command_errors(args: list[str], env: dict[str, str], says: str) -> None:
    out = subprocess.run(
        [*CMD, "credential", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
    )
    assert out.returncode == 2 and says in out.stderr and not out.stdout
    assert env.get("RENDEZVOUS_AUTH_SECRET", "\0") not in out.stderr  # never the secret


def test_serve_refuses_a_bad_auth_configuration(tmp_path: Path) -> None:
    weak = tmp_path / "weak"
    weak.write_text("hunter2\n")
    cases = [
        (["--auth-secret-file", str(weak)], "at least 16"),
        (["--auth-secret-file", str(tmp_path / "missing")], "cannot read the auth secret file"),
        (["--allow-v1", "legacy-.*"], "--allow-v1 only applies with auth on"),
    ]
    for args, says in cases:
        out = subprocess.run(
            [*CMD, "serve", "--host", "127.0.0.1", "--port", "0", "--no-http", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
        assert out.returncode == 2 and says in out.stderr, out.stderr
        assert "hunter2" not in out.stderr


def test_without_a_secret_the_listening_line_says_auth_is_off() -> None:
    with running("--port", "0", "--no-http") as (_proc, record):
        assert record["auth"] is False and record["allow_v1"] is None
        # A credentialed request is read (its trailer ignored) and waits like any other.
        port = record["port"]
        name = unique("open/")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(encode_v2_request(name, credential=credential_for("open/")))
            assert decode_v2_response(sock.recv(51, socket.MSG_WAITALL)).status is Status.WAITING


def test_settings_hide_the_secrets_and_check_the_auth_options() -> None:
    from rendezvous.dispatch import Dispatcher
    from rendezvous.settings import Settings

    settings = Settings(auth_secrets=(SECRET.encode(),), allow_v1="legacy-.*")
    assert settings.auth and SECRET not in repr(settings)
    assert SECRET not in repr(Dispatcher(settings).auth)
    assert not Settings().auth and Dispatcher(Settings()).auth is None
    with pytest.raises(ValueError, match="only applies with auth on"):
        Settings(allow_v1="legacy-.*")
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings(auth_secrets=(SECRET.encode(),), allow_v1="(")
    with pytest.raises(ValueError, match="at least 16 bytes") as info:
        Settings(auth_secrets=(b"hunter2",))
    assert "hunter2" not in str(info.value)


def test_relay_requests_are_judged_like_v2_requests() -> None:
    """The hook main's relay (issue 12) takes: RelayHub(credential_check=...)."""
    from rendezvous.credentials import AuthPolicy

    policy = AuthPolicy.create(SECRET.encode())
    now = time.time()
    good = credential_for("job/").encode()
    assert policy.check_relay(b"job/0-1", good, now).allowed
    assert policy.check_relay(b"job/0-1", b"", now).reason == "no_credential"
    assert policy.check_relay(b"job/0-1", b"\xff\xfe", now).reason == "malformed"
    assert policy.check_relay(b"other/0-1", good, now).reason == "wrong_prefix"
    assert policy.check_relay(b"job/0-1", good, now + 3600).reason == "expired"
    forged = credential_for("job/", secret=OTHER_SECRET).encode()
    assert policy.check_relay(b"job/0-1", forged, now).reason == "forged"


def test_relay_ends_need_a_credential_for_their_name(auth_server) -> None:
    """With auth on, the relay is no open proxy: an end without a credential, or with one
    for another prefix, is refused (BAD_CREDENTIAL); two ends with valid ones are spliced."""
    from fmi_client.relay import RelayRefused, relay_connect
    from tcpunch.relay import RelayRefusal

    _, _, port, _ = auth_server
    name = unique("jobR-")
    for credential in (None, credential_for("someone-else-").encode()):
        with pytest.raises(RelayRefused) as refused:
            relay_connect(name, "127.0.0.1", port, time.monotonic() + 5, credential=credential)
        assert refused.value.reason is RelayRefusal.BAD_CREDENTIAL
    good = credential_for("jobR-").encode()
    ends: list[socket.socket] = []
    other = threading.Thread(
        target=lambda: ends.append(
            relay_connect(name, "127.0.0.1", port, time.monotonic() + 5, credential=good)
        )
    )
    other.start()
    mine = relay_connect(name, "127.0.0.1", port, time.monotonic() + 5, credential=good)
    other.join(10)
    with mine, ends[0]:
        mine.sendall(b"relayed with a credential")
        assert ends[0].recv(100) == b"relayed with a credential"


@pytest.mark.parametrize("ttl", ["604801", "100000000000000000000"])
def test_credential_ttl_beyond_seven_days_is_a_usage_error_naming_the_cap(ttl: str) -> None:
    """A 21-digit expiry would mint a credential nobody accepts: the CLI refuses first."""
    done = subprocess.run(
        [*CMD, "credential", "--prefix", "job/", "--ttl", ttl],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(RENDEZVOUS_AUTH_SECRET=SECRET),
    )
    assert done.returncode == 2 and not done.stdout
    assert "--ttl" in done.stderr and "604800" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr
    longest = subprocess.run(
        [*CMD, "credential", "--prefix", "job/", "--ttl", "604800"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(RENDEZVOUS_AUTH_SECRET=SECRET),
        check=True,
    ).stdout.strip()
    expiry = int(longest.split(":")[0])
    assert 0 < expiry - time.time() <= 604800

"""The server as a real process: CLI, environment, signals and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from rendezvous import __version__
from tcpunch import Status, decode_v2_response, encode_v2_request
from testbed.procs import free_port
from tests.facilities import require
from tests.server.serverproc import CMD, clean_env, http_get, running


def test_version_and_help():
    out = subprocess.run([*CMD, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and __version__ in out.stdout
    help_text = subprocess.run(
        [*CMD, "serve", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for option in (
        "--peer-timeout",
        "--v1-peer-timeout",
        "--request-timeout",
        "--max-connections",
        "--max-waiting-per-ip",
        "--allow-delete-pairs",
        "--name-pattern",
        "--drain-timeout",
        "--loop",
        "--log-level",
    ):
        assert option in help_text
    assert "RENDEZVOUS_PEER_TIMEOUT" in help_text and "PORT" in help_text


def test_bad_option_is_a_usage_error():
    out = subprocess.run(
        [*CMD, "serve", "--name-pattern", "(unclosed"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "not a regex" in out.stderr


def test_sigterm_drains_and_exits_zero():
    with running("--port", "0", "--http-port", "0", "--loop", "uvloop") as (proc, rec):
        assert rec["loop"].startswith("uvloop")
        port, http_port = rec["port"], rec["http_port"]
        assert http_get(http_port, "/readyz") == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as waiter:
            waiter.sendall(encode_v2_request(f"proc_{os.getpid()}"))
            assert decode_v2_response(waiter.recv(51, socket.MSG_WAITALL)).status == 0
            proc.send_signal(signal.SIGTERM)
            timeout = decode_v2_response(waiter.recv(51, socket.MSG_WAITALL))
            assert timeout.status is Status.TIMEOUT
        assert proc.wait(timeout=15) == 0
        events = [json.loads(line).get("event") for line in proc.stderr]
        assert "draining" in events and "drained" in events


def test_sigint_exits_zero_with_asyncio_loop():
    with running("--port", "0", "--no-http", "--loop", "asyncio") as (proc, rec):
        assert rec["http_port"] is None and "asyncio" in rec["loop"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_environment_configures_every_option():
    port, http_port = free_port(), free_port()
    env = clean_env(
        RENDEZVOUS_PORT=str(port),
        RENDEZVOUS_HTTP_PORT=str(http_port),
        RENDEZVOUS_PEER_TIMEOUT="0.3",
        RENDEZVOUS_LOG_LEVEL="debug",
    )
    with running(env=env) as (proc, rec):
        assert rec["port"] == port and rec["http_port"] == http_port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as waiter:
            waiter.sendall(encode_v2_request(f"env_{os.getpid()}"))
            waiter.recv(51, socket.MSG_WAITALL)
            timeout = decode_v2_response(waiter.recv(51, socket.MSG_WAITALL))
            assert timeout.status is Status.TIMEOUT  # 0.3 s from the environment
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_plain_port_variable_is_honoured():
    port = free_port()
    with running("--http-port", "0", env=clean_env(PORT=str(port))) as (proc, rec):
        assert rec["port"] == port
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_port_in_use_exits_with_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = subprocess.run(
            [
                *CMD,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(taken.getsockname()[1]),
                "--no-http",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
    assert out.returncode == 1 and "cannot listen" in out.stderr


def test_pairing_is_logged_as_one_json_line():
    with running("--port", "0", "--no-http") as (proc, rec):
        name = f"logged_{os.getpid()}"
        with socket.create_connection(("127.0.0.1", rec["port"]), timeout=5) as a:
            a.sendall(name.encode())
            a.recv(8, socket.MSG_WAITALL)
            time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", rec["port"]), timeout=5) as b:
                b.sendall(name.encode())
                b.recv(16, socket.MSG_WAITALL)
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        lines = [json.loads(line) for line in proc.stderr]
    (paired,) = [entry for entry in lines if entry.get("event") == "paired"]
    assert paired["pairing"] == name and paired["protocol"] == "v1"
    assert paired["waiter"].startswith("127.0.0.1:") and paired["newcomer"].startswith("127.")
    assert paired["wait_seconds"] > 0


def test_every_paired_line_survives_sigterm():
    """Lines are written in batches: the ones still buffered at SIGTERM go out at exit."""
    pairs = 40
    with running("--port", "0", "--no-http") as (proc, rec):
        port = rec["port"]
        names = [f"flush_{os.getpid()}_{i}" for i in range(pairs)]
        for name in names:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as a:
                a.sendall(name.encode())
                a.recv(8, socket.MSG_WAITALL)  # a is waiting
                with socket.create_connection(("127.0.0.1", port), timeout=5) as b:
                    b.sendall(name.encode())
                    assert len(b.recv(16, socket.MSG_WAITALL)) == 16
        proc.send_signal(signal.SIGTERM)  # at once: the last lines are still buffered
        assert proc.wait(timeout=15) == 0
        lines = [json.loads(line) for line in proc.stderr]  # every line whole JSON
    paired = [entry["pairing"] for entry in lines if entry.get("event") == "paired"]
    assert sorted(paired) == sorted(names)
    assert lines[-1]["event"] == "drained" and lines[-1]["pairings"] == pairs


SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has a handler for SIGTERM (the SigCgt mask in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    except FileNotFoundError:
        pass
    return False


def wait_for_sigterm_handler(proc: subprocess.Popen, pid: int | None = None) -> None:
    deadline = time.monotonic() + 20
    while not catches_sigterm(pid or proc.pid):
        assert proc.poll() is None, f"exited before handling signals: {proc.returncode}"
        assert time.monotonic() < deadline, "no SIGTERM handler within 20 s"
        time.sleep(0.001)


def test_sigterm_during_startup_exits_zero_without_listening():
    port = free_port()
    proc = subprocess.Popen(
        [*CMD, "serve", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_sigterm_handler(proc)  # the early handler: before the heavy imports
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        events = [json.loads(line).get("event") for line in proc.stderr]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    # The early handler is in place about a second (the heavy imports) before the loop's
    # own: the signal lands in between, so the server never listens.
    assert events == ["stopped_early"], events


def test_sigterm_to_pid_1_during_startup_exits_zero():
    """As PID 1 (a container), a SIGTERM with no handler in place is dropped by the kernel."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare")
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child",
         *CMD, "serve", "--host", "127.0.0.1", "--port", "0", "--no-http"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        server = None
        while server is None:  # unshare's child is the server, PID 1 in its namespace
            assert proc.poll() is None, f"unshare exited: {proc.returncode}"
            assert time.monotonic() < deadline, "no server process under unshare"
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as children:
                pids = children.read().split()
            server = int(pids[0]) if pids else None
            if server is None:
                time.sleep(0.001)
        with open(f"/proc/{server}/status") as status:
            nspid = next(line for line in status if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid
        wait_for_sigterm_handler(proc, server)
        os.kill(server, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        events = [json.loads(line).get("event") for line in proc.stderr]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert events == ["stopped_early"], events


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (("--host", "0.0.0.0"), True),  # listening on every address, relay on, no auth
        (("--host", "0.0.0.0", "--no-relay"), False),
        ((), False),  # loopback only: nobody else can reach it
    ],
)
def test_an_open_relay_on_a_reachable_address_is_warned_about(args, warned):
    with running("--port", "0", "--no-http", *args) as (proc, _):
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        records = [json.loads(line) for line in proc.stderr.read().splitlines() if line]
    opened = [r for r in records if r.get("event") == "relay_open"]
    assert bool(opened) is warned, records
    if warned:
        assert opened[0]["level"] == "WARNING", opened
        assert "--auth-secret-file" in opened[0]["detail"] and "--no-relay" in opened[0]["detail"]

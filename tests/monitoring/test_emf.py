"""CloudWatch EMF lines: checked against the format's rules, from a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import threading
import time
import urllib.request
from functools import partial

import pytest

from rendezvous.emf import SERIES, EmfWriter
from rendezvous.settings import Settings
from tests.monitoring.emf_spec import violations
from tests.monitoring.load import EXPECTED, drive_load
from tests.monitoring.stack import SERVE, rendezvous_server

COUNTERS = {
    "Pairings": "pairings",
    "Requests": "requests",
    "Refusals": "refusals",
    "Expirations": "expirations",
    "AbandonedWaits": "abandoned",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDEZVOUS_")}
    env.pop("PORT", None)
    return {**env, **extra}


def test_server_prints_valid_emf_lines_whose_counters_add_up(tmp_path) -> None:
    env = clean_env(RENDEZVOUS_EMF_INTERVAL="1")  # the shortest interval allowed
    args = ("--peer-timeout", "0.5", "--drain-timeout", "2", "--emf-namespace", "RvTest")
    args += ("--emf-service", "team-a")
    with rendezvous_server(
        tmp_path / "server.log", *args, stdout=subprocess.PIPE, env=env
    ) as server:
        asyncio.run(drive_load(server.port))
        time.sleep(3.5)  # a few more intervals
        server.proc.terminate()
        out, _ = server.proc.communicate(timeout=20)
        assert server.proc.returncode == 0
    lines = out.splitlines()
    logged = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    (on,) = [entry for entry in logged if entry.get("event") == "emf_on"]
    assert (on["interval"], on["namespace"], on["service"]) == (1, "RvTest", "team-a")
    assert len(lines) >= 4, out  # periodic lines, not only the one at exit
    for line in lines:
        assert violations(line) == [], line
    documents = [json.loads(line) for line in lines]
    for doc in documents:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "RvTest"
        assert directive["Dimensions"] == [["Service"]] and doc["Service"] == "team-a"
        names = [m["Name"] for m in directive["Metrics"]]
        assert names[: len(SERIES)] == [s.name for s in SERIES]
    stamps = [doc["_aws"]["Timestamp"] for doc in documents]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1000 - time.time()) < 60
    for name, key in COUNTERS.items():  # deltas: their sum is the total
        assert sum(doc[name] for doc in documents) == EXPECTED[key], name
        assert all(doc[name] >= 0 for doc in documents)
    waits = [doc["PairingWaitMean"] for doc in documents if "PairingWaitMean" in doc]
    assert waits and all(w >= 0 for w in waits) and max(waits) > 0
    assert max(doc["ConnectionsUsed"] for doc in documents) >= 0
    assert documents[0]["Ready"] == 1
    assert documents[-1]["Ready"] == 0  # the last line is written after the drain
    assert documents[-1]["OpenConnections"] == 0 and documents[-1]["WaitingClients"] == 0


def test_no_emf_lines_by_default(tmp_path) -> None:
    with rendezvous_server(
        tmp_path / "server.log", "--peer-timeout", "0.5", stdout=subprocess.PIPE, env=clean_env()
    ) as server:
        asyncio.run(drive_load(server.port))
        server.proc.terminate()
        out, _ = server.proc.communicate(timeout=20)
    assert out == ""


@pytest.mark.parametrize(
    ("args", "env", "complaints"),
    [
        (("--emf-interval", "-1"), {}, ("--emf-interval",)),
        (("--emf-interval", "nan"), {}, ("--emf-interval", "finite", "nan")),
        (("--emf-interval", "inf"), {}, ("--emf-interval", "finite")),
        ((), {"RENDEZVOUS_EMF_INTERVAL": "nan"}, ("--emf-interval", "finite")),
        (("--emf-interval", "1e-9"), {}, ("--emf-interval", "at least 1")),
        (("--emf-interval", "0.5"), {}, ("--emf-interval", "at least 1")),
        (("--emf-namespace", "AWS/ECS"), {}, ("--emf-namespace",)),
        (("--emf-namespace", ""), {}, ("--emf-namespace",)),
        (("--emf-service", ""), {}, ("--emf-service", "1-1024")),
        (("--emf-service", " "), {}, ("--emf-service", "not whitespace")),
        (("--emf-service", "équipe"), {}, ("--emf-service", "ASCII only")),
        (("--emf-service", "a\tb"), {}, ("--emf-service", "control characters")),
        (("--emf-service", "x" * 1025), {}, ("--emf-service", "1-1024")),
    ],
)
def test_bad_emf_options_are_usage_errors(args, env, complaints) -> None:
    run = subprocess.run(
        [*SERVE, "--port", "0", "--http-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
    )
    assert run.returncode == 2, run.stderr
    for complaint in complaints:
        assert complaint in run.stderr, run.stderr


@pytest.mark.parametrize(
    ("interval", "service"), [(0, "rendezvous"), (1, "team a"), (30.5, "x" * 1024)]
)
def test_good_emf_settings_are_taken(interval, service) -> None:
    settings = Settings(emf_interval=interval, emf_service=service)
    assert (settings.emf_interval, settings.emf_service) == (interval, service)


class Source:
    """Metric values a test sets by hand (the writer only ever calls it)."""

    def __init__(self) -> None:
        self.values = {s.name: 0.0 for s in SERIES} | {"_wait_sum": 0.0, "_wait_count": 0}

    def __call__(self) -> dict[str, float]:
        return dict(self.values)


def test_counters_are_deltas_gauges_are_levels_and_wait_is_the_interval_mean() -> None:
    source = Source()
    lines: list[str] = []
    writer = EmfWriter(source, 60, write=lines.append, clock=lambda: 1_700_000_000.5)
    source.values |= {"Pairings": 4, "WaitingClients": 7, "_wait_sum": 2.0, "_wait_count": 4}
    writer.emit()
    source.values |= {"Pairings": 6, "WaitingClients": 2, "_wait_sum": 5.0, "_wait_count": 6}
    writer.emit()
    writer.emit()
    first, second, third = (json.loads(line) for line in lines)
    assert first["_aws"]["Timestamp"] == 1_700_000_000_500
    assert (first["Pairings"], second["Pairings"], third["Pairings"]) == (4, 2, 0)
    assert (first["WaitingClients"], second["WaitingClients"]) == (7, 2)
    assert first["PairingWaitMean"] == 0.5 and second["PairingWaitMean"] == 1.5
    assert "PairingWaitMean" not in third  # no pairings: no mean, not a made-up 0
    names = [m["Name"] for m in third["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "PairingWaitMean" not in names
    for line in lines:
        assert violations(line) == []


async def test_writer_runs_on_the_loop_and_writes_a_last_line_at_stop() -> None:
    lines: list[str] = []
    writer = EmfWriter(Source(), 0.05, write=lines.append)
    writer.start(asyncio.get_running_loop())
    await asyncio.sleep(0.3)
    periodic = len(lines)
    writer.stop()
    assert periodic >= 2 and len(lines) == periodic + 1
    writer.stop()  # a second stop writes nothing more
    await asyncio.sleep(0.1)
    assert len(lines) == periodic + 1


async def test_a_failing_line_is_logged_and_the_next_one_still_comes(caplog) -> None:
    source, lines = Source(), []
    broken = {"on": True}

    def read() -> dict[str, float]:
        if broken["on"]:
            broken["on"] = False
            return {}  # no values at all: the document cannot be built
        return source()

    writer = EmfWriter(source, 0.05, write=lines.append)
    writer.read = read
    source.values["Pairings"] = 3  # counted in the line after the failed one
    writer.start(asyncio.get_running_loop())
    await asyncio.sleep(0.3)
    writer.stop()
    assert [r for r in caplog.records if getattr(r, "event", "") == "emf_error"]
    assert len(lines) >= 2 and all(violations(line) == [] for line in lines)
    assert sum(json.loads(line)["Pairings"] for line in lines) == 3


async def test_closed_output_stops_the_writer_with_one_warning(caplog) -> None:
    calls = []

    def write(line: str) -> None:
        calls.append(line)
        raise BrokenPipeError(32, "Broken pipe")

    writer = EmfWriter(Source(), 0.02, write=write)
    writer.start(asyncio.get_running_loop())
    await asyncio.sleep(0.2)
    assert len(calls) == 1
    stopped = [r for r in caplog.records if getattr(r, "event", "") == "emf_stopped"]
    assert len(stopped) == 1
    writer.stop()  # nothing scheduled any more: no further write
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda d: d.pop("_aws"), "no _aws"),
        (lambda d: d["_aws"].update(Timestamp="now"), "Timestamp"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Extra=1), "does not define"),
        (lambda d: d.pop("Pairings"), "metric Pairings"),
        (lambda d: d.update(Service=3), "dimension 'Service'"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Pairs"), "Unit"),
        (lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Metrics=[]), "1-100"),
        (lambda d: d.update(Pairings=[1] * 101), "metric Pairings"),
    ],
)
def test_the_spec_checker_catches_each_broken_rule(mutate, rule) -> None:
    lines: list[str] = []
    EmfWriter(Source(), 1, write=lines.append).emit()
    document = json.loads(lines[0])
    assert violations(lines[0]) == []
    mutate(document)
    found = violations(json.dumps(document))
    assert any(rule in problem for problem in found), found


def full_pipe() -> tuple[int, int]:
    """A pipe of one page whose buffer is already full: the next write to it blocks."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_fd, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_fd, b"x" * 4096)
    os.set_blocking(write_fd, True)
    return read_fd, write_fd


def test_a_stdout_nobody_reads_never_stops_the_server(tmp_path) -> None:
    read_fd, write_fd = full_pipe()
    try:
        with rendezvous_server(
            tmp_path / "server.log", "--emf-interval", "1", "--drain-timeout", "1",
            stdout=write_fd, env=clean_env(),
        ) as server:  # fmt: skip
            os.close(write_fd)
            write_fd = -1
            time.sleep(2.5)  # an EMF line or two is due: stdout takes none of them
            base = f"http://127.0.0.1:{server.http_port}"
            with urllib.request.urlopen(base + "/livez", timeout=5) as answer:
                assert answer.status == 200
            with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
                metrics = answer.read().decode()
            assert "rendezvous_emf_dropped_total 0.0" in metrics
            server.proc.terminate()
            assert server.proc.wait(timeout=20) == 0  # the last line waits 2 s at most
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_lines_stdout_cannot_take_are_dropped_counted_and_reported(caplog) -> None:
    read_fd, write_fd = full_pipe()
    stream = os.fdopen(write_fd, "w")
    writer = EmfWriter(Source(), 60, stream=stream, max_pending=2000)
    emitted = threading.Thread(target=lambda: [writer.emit() for _ in range(20)])
    emitted.start()
    emitted.join(timeout=10)
    try:
        assert not emitted.is_alive()  # emit() never waits for stdout
        assert 0 < writer.dropped < 20
        reported = [r for r in caplog.records if getattr(r, "event", "") == "emf_dropped"]
        assert sum(r.dropped for r in reported) == writer.dropped
        chunks: list[bytes] = []
        reader = threading.Thread(
            target=lambda: chunks.extend(iter(partial(os.read, read_fd, 1 << 16), b""))
        )
        reader.start()  # stdout is read again: the queued lines go out
        writer.stop()  # never started: no last line, the queue is written (2 s at most)
    finally:
        stream.close()
    reader.join(timeout=10)
    os.close(read_fd)
    data = b"".join(chunks)
    lines = data.lstrip(b"x").decode().splitlines()
    assert len(lines) == 20 - writer.dropped  # every line that was queued, whole
    assert all(violations(line) == [] for line in lines)

"""A real rendezvous server process and a real Prometheus scraping it, on loopback.

Both listen on ports chosen at run time and keep their files in the test's tmp dir; the
Prometheus runs with this repository's alert rules loaded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.facilities import require
from tests.processes import free_port, running

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "rules" / "rendezvous.rules.yml"
SERVE = (sys.executable, "-m", "rendezvous", "serve")
HTTP_ANY = ("--http-port", "0")
DISCOVERY_OFF = ("--discovery-port", "0")  # the default 10002 would clash between runs
RULE_TESTS = MONITORING / "rules" / "rendezvous.rules.test.yml"


def tool(name: str) -> str:
    """The path of a Prometheus binary (Debian's ``prometheus`` package has both)."""
    path = shutil.which(name)
    require(path is not None, f"{name} (apt-get install prometheus)")
    assert path is not None
    return path


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    http_port: int

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.http_port}"


@contextlib.contextmanager
def rendezvous_server(
    log: Path, *args: str, stdout: int = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``rendezvous serve`` on free loopback ports; its JSON log goes to ``log``."""
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*SERVE, "--host", "127.0.0.1", "--port", "0", *HTTP_ANY, *DISCOVERY_OFF, *args],
            stdout=stdout,
            stderr=sink,
            env=env,
            text=True,
        )
    found: dict[str, Any] = {}

    def listening() -> bool:
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("event") == "listening":
                found.update(entry)
                return True
        return False

    with running(proc, listening, "rendezvous serve", timeout=20):
        yield Server(proc, found["port"], found["http_port"])


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the body says what was wrong
            return json.load(exc)

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.get("/api/v1/query", **params)

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it returns nothing."""
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_until(self, expr: str, what: str, timeout: float = 30) -> None:
        """Poll until ``expr`` (a comparison) returns a sample."""
        deadline = time.monotonic() + timeout
        while self.value(expr) is None:
            assert time.monotonic() < deadline, f"Prometheus: {what} not seen in {timeout} s"
            time.sleep(0.25)


def write_config(directory: Path, target: str, rules: Path = RULES) -> Path:
    config = directory / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: no quoting surprises in paths
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "rendezvous", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    return config


@contextlib.contextmanager
def prometheus(directory: Path, target: str, rules: Path = RULES) -> Iterator[Prometheus]:
    """A Prometheus scraping ``target`` every second, storage and config in ``directory``."""
    exe = tool("prometheus")
    config = write_config(directory, target, rules)
    port = free_port()
    log = (directory / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = Prometheus(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            urllib.request.urlopen(f"{api.url}/-/ready", timeout=1).close()
        except OSError:
            return False
        return True

    try:
        with running(proc, ready, "prometheus", timeout=60):
            yield api
    finally:
        log.close()

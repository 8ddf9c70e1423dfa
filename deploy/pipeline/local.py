"""Run the pipeline on this machine: the same handlers, one OS process per rank.

Initialize and Summarize run in this process; each rank is ``python -m
rendezvous_pipeline.worker ITEM.json``, so ranks talk over real sockets through a real
rendezvous server (an in-process BackgroundServer unless one is given). The in-process
server runs with auth, from a fresh random secret; each run gets its own credential and
job secret, handed to the rank processes in their environment (never in a file).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fmi_client
import rendezvous_pipeline
from rendezvous_deploy.aws import DeployError
from rendezvous_pipeline.initialize import initialize
from rendezvous_pipeline.results import ours
from rendezvous_pipeline.runauth import AUTH_FIELDS, run_auth
from rendezvous_pipeline.summarize import summarize

#: The checkout (examples/pipeline/ is rendezvous_pipeline): ranks run from here.
REPO_ROOT = Path(rendezvous_pipeline.__file__).resolve().parent.parent.parent
#: Holds ``fmi.py``, the top-level ``fmi`` module that is fmi_client.compat.
FMI_MODULE_DIR = Path(fmi_client.__file__).resolve().parent / "shim"
Progress = Callable[[int, int], None]  # (ranks finished, world size)


class PipelineFailed(RuntimeError):
    """A stage or a rank failed; the message is the failing rank's own."""


@dataclass
class RankOutcome:
    rank: int
    returncode: int | None
    result: dict[str, Any] | None = None
    error: str | None = None
    origin: bool = True
    stderr: str = ""


@dataclass
class LocalRun:
    """One world size's run: timings, quality and where the results are."""

    world_size: int
    wall_seconds: float
    summary: dict[str, Any]
    ranks: list[dict[str, Any]] = field(default_factory=list)
    results_dir: Path = Path()

    @property
    def added(self) -> list[dict[str, Any]]:
        """The pipeline's own fields of each rank's result (beside the users' keys)."""
        return [ours(r) for r in self.ranks]

    @property
    def combined(self) -> list[dict[str, Any]]:
        """The run's combined_data.json: the users' per-rank objects."""
        data = json.loads((self.results_dir / "combined_data.json").read_text())
        return data if isinstance(data, list) else []

    @property
    def max_rank_seconds(self) -> float:
        return max((r.get("wall_seconds") or 0.0) for r in self.added)

    @property
    def samples(self) -> int:
        return int(self.summary.get("num_samples") or 0)

    @property
    def samples_per_second(self) -> float:
        """Global throughput: all samples over the slowest rank's inference time."""
        value = (self.summary.get("global") or {}).get("sample_persec")
        return float(value or 0.0)

    @property
    def mae(self) -> float | None:
        return (self.summary.get("global") or {}).get("mae")

    @property
    def comm_seconds(self) -> float:
        """Rendezvous and collectives on the critical path: from the last rank's arrival at
        the communication phase to the last rank leaving it. Time a rank spends waiting
        for a slower peer to arrive is skew, not communication, and is left out."""
        starts = [r["comm_started_at"] for r in self.added if "comm_started_at" in r]
        ends = [r["comm_finished_at"] for r in self.added if "comm_finished_at" in r]
        if not starts or not ends:
            return 0.0
        return max(0.0, max(ends) - max(starts))

    @property
    def waiting_seconds(self) -> float:
        """The longest any rank waited in the communication phase for its peers."""
        starts = [r["comm_started_at"] for r in self.added if "comm_started_at" in r]
        return max(starts) - min(starts) if starts else 0.0

    @property
    def relayed_links(self) -> int:
        """Links between ranks that went through the rendezvous server's relay."""
        return int(self.summary.get("relayed_links") or 0)

    @property
    def comm_share(self) -> float:
        """Critical-path communication over the slowest rank's handler time."""
        slowest = self.max_rank_seconds
        return self.comm_seconds / slowest if slowest > 0 else 0.0


def worker_env(world_size: int, cpus: int | None = None) -> dict[str, str]:
    """Environment for rank processes: importable packages, ``import fmi`` (our
    fmi_client.compat under FMI's name, so an FMI worker runs unchanged), fair share of
    CPU threads."""
    env = dict(os.environ)
    paths = (str(REPO_ROOT), str(FMI_MODULE_DIR), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    threads = max(1, (cpus or os.cpu_count() or 1) // world_size)
    env["PIPELINE_TORCH_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _outcome(rank: int, proc: subprocess.Popen[str]) -> RankOutcome:
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    outcome = RankOutcome(rank, proc.returncode, stderr=stderr)
    try:
        message = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        message = None
    if proc.returncode == 0 and isinstance(message, dict) and "error" not in message:
        outcome.result = message
    elif isinstance(message, dict) and "error" in message:
        outcome.error, outcome.origin = str(message["error"]), bool(message.get("origin"))
    else:
        tail = "\n".join(stderr.strip().splitlines()[-5:]) or "(no output)"
        outcome.error = f"rank {rank} exited with status {proc.returncode}: {tail}"
    return outcome


def run_ranks(
    items: list[dict[str, Any]],
    work_dir: Path,
    *,
    timeout: float,
    progress: Progress | None = None,
    cpus: int | None = None,
    auth: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Start one process per item, wait for all (bounded), return results by rank.

    ``auth`` (the run's credential and job secret) goes into the ranks' environment.

    The first rank that fails on its own (not because a peer failed) stops the run and
    its message becomes the PipelineFailed message; the other processes are stopped.
    """
    world_size = len(items)
    env = worker_env(world_size, cpus)
    for name in AUTH_FIELDS:  # this run's, or none at all
        env.pop(name, None)
    env.update(auth or {})
    work_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        for item in items:
            path = work_dir / f"item-{item['RANK']}.json"
            path.write_text(json.dumps(item))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rendezvous_pipeline.worker", str(path)],
                    env=env,
                    cwd=str(REPO_ROOT),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outcomes: dict[int, RankOutcome] = {}
        deadline = time.monotonic() + timeout
        while len(outcomes) < world_size:
            for rank, proc in enumerate(procs):
                if rank not in outcomes and proc.poll() is not None:
                    outcomes[rank] = _outcome(rank, proc)
                    if progress:  # failed ranks are not "done"
                        done = sum(1 for o in outcomes.values() if not o.error)
                        progress(done, world_size)
            failures = [o for o in outcomes.values() if o.error]
            own = [o for o in failures if o.origin]
            if own:
                raise PipelineFailed(own[0].error or "")
            if failures and len(outcomes) == world_size:
                raise PipelineFailed(failures[0].error or "")
            if time.monotonic() > deadline:
                waiting = [r for r in range(world_size) if r not in outcomes]
                raise PipelineFailed(
                    f"ranks {waiting} did not finish within {timeout:.0f} s "
                    "(raise --timeout for larger data)"
                )
            time.sleep(0.05)
        return [outcomes[r].result or {} for r in range(world_size)]
    finally:
        _stop(procs)
        for proc in procs:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def probe_endpoint(address: str, timeout: float = 3.0) -> None:
    """Fail at once when nothing accepts TCP connections at ``host:port``: otherwise every
    rank would wait out its own rendezvous timeout before saying so."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise DeployError(
            f"no rendezvous server reachable at {address} ({err.__class__.__name__}: {err}): "
            "start one there, or leave out --rendezvous to use an in-process server"
        ) from err


@dataclass(frozen=True)
class Rendezvous:
    """Where the ranks meet, and the server's auth secret to mint credentials from (None:
    the server needs none, or its secret is not known here)."""

    address: str
    auth_secret: bytes | None = field(default=None, repr=False)


@contextlib.contextmanager
def local_rendezvous(address: str | None) -> Iterator[Rendezvous]:
    """The given ``host:port`` (its secret from $RENDEZVOUS_AUTH_SECRET, as the server
    reads it, if set), or an in-process server with auth on, from a fresh secret."""
    from rendezvous.credentials import load_secret

    if address:
        probe_endpoint(address)
        yield Rendezvous(address, load_secret(None, os.environ))
        return
    from rendezvous.embedded import BackgroundServer

    secret = secrets.token_urlsafe(32).encode()
    with BackgroundServer(
        host="127.0.0.1", port=0, http_port=None, auth_secrets=(secret,)
    ) as server:
        yield Rendezvous(server.address, secret)


@contextlib.contextmanager
def rendezvous_endpoint(address: str | None) -> Iterator[str]:
    """The given ``host:port`` (checked to accept connections), or an in-process server on a
    free loopback port without auth (``local_rendezvous`` has auth)."""
    if address:
        probe_endpoint(address)
        yield address
        return
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        yield server.address


def run_local(
    *,
    data_dir: Path,
    results_dir: Path,
    world_size: int,
    endpoint: str,
    batch_size: int = 256,
    data_prefix: str = "",
    model: Path | None = None,
    script: Path | None = None,
    file_limit: int | None = None,
    timeout: float = 600.0,
    run_id: str | None = None,
    progress: Progress | None = None,
    cpus: int | None = None,
    auth_secret: bytes | None = None,
    comm_name: str | None = None,
    relay: str | None = None,
) -> LocalRun:
    """Initialize, one process per rank, Summarize; timings from the first to the last.

    Every run gets a fresh job secret, and with ``auth_secret`` (the server's) a credential
    for its own pairing names (``comm_name``, default ``pipeline-<run_id>``: give the
    name a script passes to ``fmi.Communicator`` when it uses a fixed one). ``relay``
    ("auto", "never", "always"; default: the payload's default, "auto") is the payload's.
    """
    results_dir = results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or f"ws{world_size}-{int(time.time() * 1000)}-{os.getpid()}"
    payload: dict[str, Any] = {
        "bucket": str(results_dir),
        "data_bucket": str(data_dir.resolve()),
        "data_prefix": data_prefix,
        "result_path": f"runs/{run_id}",
        "world_size": world_size,
        "rendezvous_endpoint": endpoint,
        "batch_size": batch_size,
        "run_id": run_id,
        "timeout": min(timeout, 120.0),
    }
    if file_limit:
        payload["file_limit"] = file_limit
    if comm_name:
        payload["comm_name"] = comm_name
    if relay:
        payload["relay"] = relay
    if model is not None:
        key = f"models/{run_id}/{model.name}"
        (results_dir / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, results_dir / key)
        payload.update(S3_object_name=key, object_type="file")
    if script is not None:
        key = f"scripts/{run_id}/{script.name}"
        (results_dir / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(script, results_dir / key)
        payload["script"] = key

    started = time.perf_counter()
    auth = run_auth(comm_name or f"pipeline-{run_id}", auth_secret, int(timeout) + 300)
    init = initialize(payload, auth=auth)
    items = json.loads((results_dir / init["items_key"]).read_text())
    ranks = run_ranks(
        items,
        results_dir / payload["result_path"] / "_pipeline",
        timeout=timeout,
        progress=progress,
        cpus=cpus,
        auth=init.pop("auth"),
    )
    summary = summarize(init)
    wall = time.perf_counter() - started
    return LocalRun(world_size, wall, summary, ranks, results_dir / payload["result_path"])

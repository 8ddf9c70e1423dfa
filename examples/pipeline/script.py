"""A payload ``script`` run in place of the built-in inference (worker.py decides which).

It runs as a subprocess with RANK, WORLD_SIZE and the item's fields in its environment,
``import fmi`` (fmi_client.compat under FMI's name) on its path and an ``fmi.json`` for the
run's rendezvous server beside it; its exit code decides the rank's success.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fmi_client
from rendezvous_pipeline.payload import data_path_keys
from rendezvous_pipeline.results import OURS
from rendezvous_pipeline.runauth import CREDENTIAL_FIELD, JOB_SECRET_FIELD, without_auth
from rendezvous_pipeline.storage import Storage


class RankFailed(RuntimeError):
    """This rank failed; the message names the rank (what the execution shows)."""


#: The directory holding fmi_client and tcpunch (LAMBDA_TASK_ROOT in the image, the
#: checkout or site-packages elsewhere).
CODE_ROOT = Path(fmi_client.__file__).resolve().parent.parent


def script_path() -> list[str]:
    """PYTHONPATH entries a script needs: our packages, and the ``fmi`` module (our
    fmi_client.compat under FMI's name) so a worker written for FMI runs unchanged."""
    return [str(CODE_ROOT), str(CODE_ROOT / "fmi_client" / "shim")]


def write_fmi_config(
    directory: Path,
    endpoint: str,
    timeout_s: float,
    protocol: str | None = None,
    relay: str = "auto",
) -> Path:
    """FMI's ``fmi.json`` for this run's rendezvous server, next to the script (and in its
    working directory), where FMI-style helpers look for it. ``protocol="v2"`` when the
    rank holds a credential (v1, FMI's default, cannot carry one); the credential itself
    stays in the environment, not in the file. ``relay`` goes in when not "auto"."""
    host, _, port = endpoint.rpartition(":")
    config = {
        "backends": {
            "Direct": {
                "enabled": True,
                "host": host.strip("[]"),
                "port": int(port),
                "max_timeout": int(timeout_s * 1000),
                **({"protocol": protocol} if protocol else {}),
                **({"relay": relay} if relay != "auto" else {}),
            }
        },
        "model": {"Direct": {"resolve_host_dns": True}},
    }
    path = directory / "fmi.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def run_script(
    item: dict[str, Any],
    results: Storage,
    remaining_s: float | None,
    auth: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the user's script from S3_BUCKET as a subprocess; a non-zero exit fails the rank.

    The run's credential and job secret reach it as $RENDEZVOUS_CREDENTIAL and $FMI_SECRET,
    where ``fmi`` looks for them (``PIPELINE_ITEM`` holds neither).
    """
    auth = auth or {}
    rank, world_size = item["RANK"], item["WORLD_SIZE"]
    key = str(item["SCRIPT"])
    try:
        source = results.read(key)
    except Exception as exc:
        raise RankFailed(
            f"rank {rank}/{world_size}: cannot read script {results.describe(key)}: {exc}"
        ) from exc
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*script_path(), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        RENDEZVOUS_ENDPOINT=str(item["RENDEZVOUS_ENDPOINT"]),
        COMM_NAME=str(item["COMM_NAME"]),
        S3_BUCKET=str(item["S3_BUCKET"]),
        DATA_BUCKET=str(item["DATA_BUCKET"]),
        DATA_PREFIX=str(item["DATA_PREFIX"]),
        DATA_PATH=json.dumps(data_path_keys(item["DATA_PATH"])),
        RESULT_PATH=str(item["RESULT_PATH"]),
        BATCH_SIZE=str(item["BATCH_SIZE"]),
        PIPELINE_ITEM=json.dumps(without_auth(item)),
    )
    for field in (CREDENTIAL_FIELD, JOB_SECRET_FIELD):  # this run's, or none at all
        env.pop(field, None)
        if auth.get(field):
            env[field] = auth[field]
    timeout = max(1.0, (remaining_s or 3600.0) - 5.0)
    with tempfile.TemporaryDirectory(prefix=f"pipeline-rank{rank}-") as tmp:
        path = Path(tmp) / Path(key).name
        path.write_bytes(source)
        config = write_fmi_config(
            Path(tmp),
            str(item["RENDEZVOUS_ENDPOINT"]),
            item["TIMEOUT"],
            "v2" if auth.get(CREDENTIAL_FIELD) else None,
            str(item.get("RELAY") or "auto"),
        )
        env["FMI_CONFIG"] = str(config)
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(path)],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RankFailed(
                f"rank {rank}/{world_size}: script {key} ran past {timeout:.0f} s and was stopped"
            ) from exc
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:]) or "(no stderr)"
        raise RankFailed(
            f"rank {rank}/{world_size}: script {key} exited with status {proc.returncode}: {tail}"
        )
    return {
        OURS: {
            "rank": rank,
            "world_size": world_size,
            "script": key,
            "returncode": 0,
            "wall_seconds": time.perf_counter() - started,
        }
    }

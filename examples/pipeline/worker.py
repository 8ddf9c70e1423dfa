"""The per-rank Lambda (the Distributed Map's child): inference, then collectives.

Every rank, with or without data, joins the collectives: a barrier, then one allreduce
that gives every rank the global count, MAE, MSE, bias, R^2 and throughput, plus which
ranks failed. A rank whose inference failed still joins, so its peers learn about it at
once instead of timing out; then it raises its own message. Rank 0 writes the global
summary. A payload ``script`` replaces the built-in inference: it runs as a subprocess
with RANK and WORLD_SIZE in its environment, ``import fmi`` (fmi_client.compat) and an
``fmi.json`` for the run's rendezvous server beside it, and its exit code decides success.
The per-rank JSON is the users' format (examples/pipeline/results.py).

Handler: ``rendezvous_pipeline.worker.handler``. Locally: ``python -m
rendezvous_pipeline.worker ITEM.json`` prints the result as JSON (exit 0) or the error.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

import fmi_client
from rendezvous_pipeline.metrics import SUM_FIELDS, error_sums, metrics_from_sums, nmad
from rendezvous_pipeline.payload import GLOBAL_SUMMARY, data_path_keys, log_run, validate_item
from rendezvous_pipeline.results import OURS, links_record, users_record
from rendezvous_pipeline.runauth import (
    CREDENTIAL_FIELD,
    JOB_SECRET_FIELD,
    rank_auth,
    with_auth,
    without_auth,
)
from rendezvous_pipeline.script import RankFailed, run_script
from rendezvous_pipeline.storage import Storage, join_key, open_storage

#: (rank, world_size, endpoint, comm_name, timeout, credential=..., relay=...) -> a
#: Communicator (with ``links()``).
CommunicatorFactory = Callable[..., AbstractContextManager[Any]]


class PeerFailed(RuntimeError):
    """Another rank failed; this rank stopped because of it."""


def fmi_communicator(
    rank: int,
    world_size: int,
    endpoint: str,
    name: str,
    timeout: float,
    credential: str | None = None,
    relay: str = "auto",
) -> AbstractContextManager[Any]:

    return fmi_client.Communicator(
        rank,
        world_size,
        rendezvous=endpoint,
        comm_name=name,
        timeout=timeout,
        credential=credential,
        relay=relay,
    )


class _JobSecret:
    """$FMI_SECRET set to the run's job secret while the rank communicates (where
    fmi_client looks for it), and put back as it was afterwards (a warm Lambda's next
    run must not inherit it)."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.before: str | None = None

    def __enter__(self) -> None:
        self.before = os.environ.get(JOB_SECRET_FIELD)
        if self.secret:
            os.environ[JOB_SECRET_FIELD] = self.secret

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            os.environ.pop(JOB_SECRET_FIELD, None)
        else:
            os.environ[JOB_SECRET_FIELD] = self.before


def _memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _model_source(item: dict[str, Any], results: Storage) -> bytes | None:
    """The user's model file from S3_BUCKET, or None for the shipped weights."""
    name = str(item.get("S3_OBJECT_NAME") or "").strip("/")
    if not name:
        return None
    key = join_key(name, "model.pt") if item.get("S3_OBJECT_TYPE") == "folder" else name
    try:
        return results.read(key)
    except Exception as exc:
        raise RankFailed(f"cannot read model {results.describe(key)}: {exc}") from exc


def infer(item: dict[str, Any], data: Storage, results: Storage) -> dict[str, Any]:
    """Run the model over this rank's files; timing and error sums, no communication."""
    import torch

    from rendezvous_pipeline.data import load_partition
    from rendezvous_pipeline.model import load_model

    if threads := os.environ.get("PIPELINE_TORCH_THREADS"):
        torch.set_num_threads(int(threads))
    model = load_model(_model_source(item, results))
    batch_size = int(item["BATCH_SIZE"])
    sums = np.zeros(len(SUM_FIELDS))
    preds, trues = [], []
    num_batches = 0
    seconds = cpu_seconds = data_bits = 0.0
    for key in data_path_keys(item["DATA_PATH"]):
        try:
            image, magnitude, redshift = load_partition(data.read(key)).tensors[:3]
        except Exception as exc:
            raise RankFailed(f"cannot load {data.describe(key)}: {exc}") from exc
        with torch.inference_mode():
            for start in range(0, len(redshift), batch_size):
                t0, c0 = time.perf_counter(), time.process_time()
                stop = start + batch_size
                pred = model(image[start:stop], magnitude[start:stop])
                seconds += time.perf_counter() - t0
                cpu_seconds += time.process_time() - c0
                num_batches += 1
                for tensor in (image[start:stop], magnitude[start:stop]):
                    data_bits += tensor.element_size() * tensor.nelement() * 8
                pred_np = pred.numpy()
                true_np = redshift[start : start + batch_size].numpy()
                sums += error_sums(pred_np, true_np)
                preds.append(pred_np)
                trues.append(true_np)
    pred_all = np.concatenate(preds) if preds else np.zeros(0)
    true_all = np.concatenate(trues) if trues else np.zeros(0)
    return {
        "sums": sums,
        "num_batches": num_batches,
        "inference_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "data_bits": data_bits,
        "nmad": nmad(pred_all, true_all),
    }


def run_rank(
    event: dict[str, Any],
    *,
    communicator: CommunicatorFactory = fmi_communicator,
    remaining_s: float | None = None,
) -> dict[str, Any]:
    """Everything one rank does; returns its per-rank result (also written to storage)."""
    wall0 = time.perf_counter()
    event = with_auth(event)
    auth = rank_auth(event)
    item = validate_item(without_auth(event))
    rank, world_size = item["RANK"], item["WORLD_SIZE"]
    try:
        results = open_storage(str(item["S3_BUCKET"]))
        data = open_storage(str(item["DATA_BUCKET"] or item["S3_BUCKET"]))
    except ValueError as exc:
        raise RankFailed(f"rank {rank}/{world_size}: {exc}") from exc
    if item.get("SCRIPT"):
        return run_script(item, results, remaining_s, auth)

    failure: Exception | None = None
    try:
        local = infer(item, data, results)
    except Exception as exc:  # reported to peers, then re-raised below
        failure = exc
        local = {"sums": np.zeros(len(SUM_FIELDS)), "num_batches": 0, "inference_seconds": 0.0}
        local.update(cpu_seconds=0.0, data_bits=0.0, nmad=None)

    # One vector: the six sums, then per-rank inference seconds and failure flags, so a
    # single sum-allreduce tells every rank the totals, the slowest rank and who failed.
    vector = np.zeros(len(SUM_FIELDS) + 2 * world_size)
    vector[: len(SUM_FIELDS)] = local["sums"]
    vector[len(SUM_FIELDS) + rank] = local["inference_seconds"]
    vector[len(SUM_FIELDS) + world_size + rank] = 1.0 if failure else 0.0
    comm0, comm0_unix = time.perf_counter(), time.time()
    with (
        _JobSecret(auth.get(JOB_SECRET_FIELD)),
        communicator(
            rank,
            world_size,
            item["RENDEZVOUS_ENDPOINT"],
            item["COMM_NAME"],
            item["TIMEOUT"],
            credential=auth.get(CREDENTIAL_FIELD),
            relay=item["RELAY"],
        ) as comm,
    ):
        connected = time.perf_counter()
        comm.barrier()
        barrier_done = time.perf_counter()
        total = np.asarray(comm.allreduce(vector, op="sum"), dtype=np.float64)
        links = links_record(comm.links())  # the path of each link this rank made
    comm_done = time.perf_counter()

    failed = [r for r in range(world_size) if total[len(SUM_FIELDS) + world_size + r] > 0.5]
    if failure is not None:
        message = (
            str(failure)
            if isinstance(failure, RankFailed)
            else f"{type(failure).__name__}: {failure}"
        )
        raise RankFailed(f"rank {rank}/{world_size} failed: {message}") from failure
    if failed:
        raise PeerFailed(f"rank {rank}/{world_size} stopped: rank(s) {failed} failed")

    rank_seconds = total[len(SUM_FIELDS) : len(SUM_FIELDS) + world_size]
    slowest = float(rank_seconds.max()) if world_size else 0.0
    global_metrics = metrics_from_sums(total[: len(SUM_FIELDS)])
    global_metrics["sample_persec"] = global_metrics["count"] / slowest if slowest > 0 else None
    global_metrics["slowest_rank_inference_seconds"] = slowest
    global_metrics["world_size"] = world_size

    mine = metrics_from_sums(local["sums"])
    seconds = local["inference_seconds"]
    key = join_key(item["RESULT_PATH"], f"{rank}.json")
    result = users_record(
        cpu_seconds=local["cpu_seconds"],
        memory_mb=_memory_mb(),
        inference_seconds=seconds,
        num_batches=local["num_batches"],
        batch_size=item["BATCH_SIZE"],
        data_bits=local["data_bits"],
        num_samples=mine["count"],
        result_path=item["RESULT_PATH"],
        data_path=item["DATA_PATH"],
    )
    # Ours, under one key of its own: quality, timings, the global figures every rank knows.
    result[OURS] = {
        "rank": rank,
        "world_size": world_size,
        "num_samples": mine["count"],
        "mae": mine["mae"],
        "mse": mine["mse"],
        "bias": mine["bias"],
        "r2": mine["r2"],
        "nmad": local["nmad"],
        "inference_seconds": seconds,
        "connect_seconds": connected - comm0,
        "barrier_seconds": barrier_done - connected,
        "allreduce_seconds": comm_done - barrier_done,
        "comm_seconds": comm_done - comm0,
        "relay": item["RELAY"],
        **links,
        # Wall-clock bounds of the communication phase, so a benchmark can tell waiting
        # for a slower peer (skew) from the cost of rendezvous and collectives.
        "comm_started_at": comm0_unix,
        "comm_finished_at": comm0_unix + (comm_done - comm0),
        "wall_seconds": time.perf_counter() - wall0,
        "result_file": results.describe(key),
        "global": global_metrics,
    }
    results.write(key, json.dumps(result, indent=2).encode())
    if rank == 0:
        summary_key = join_key(item["RESULT_PATH"], GLOBAL_SUMMARY)
        results.write(summary_key, json.dumps(global_metrics, indent=2).encode())
    return result


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point: one Map item in, this rank's result out; failures raise."""
    remaining = None
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        remaining = context.get_remaining_time_in_millis() / 1000.0
    shown = with_auth(event)  # the Map's {"item", "auth"}; only public fields are logged
    log_run(shown.get("RUN_ID"), f"rank {shown.get('RANK')}", context)
    return run_rank(event, remaining_s=remaining)


def main(argv: list[str] | None = None) -> int:
    """``python -m rendezvous_pipeline.worker ITEM.json``: one rank as a local process.

    Prints one JSON line: the result, or ``{"error": ..., "origin": bool}`` where origin
    tells a rank's own failure from one caused by a peer's. Exit status 0 on success.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rendezvous_pipeline.worker ITEM.json", file=sys.stderr)
        return 2
    item = json.loads(Path(args[0]).read_text())
    if not item.get("SCRIPT"):
        # Like a Lambda's init phase: imports happen before the rank's timing starts.
        import torch  # noqa: F401

        import fmi_client  # noqa: F401
    try:
        result = run_rank(item)
    except PeerFailed as exc:
        print(json.dumps({"error": str(exc), "origin": False}))
        return 1
    except Exception as exc:  # every failure becomes the rank's message
        message = str(exc)
        if not isinstance(exc, RankFailed):
            message = f"rank {item.get('RANK')}: {type(exc).__name__}: {exc}"
        print(json.dumps({"error": message, "origin": True}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

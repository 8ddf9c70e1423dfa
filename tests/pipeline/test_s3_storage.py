"""The handlers against S3 on a real moto server over HTTP: pagination past 1000 keys,
natural order, items handed over through S3, the run prefix's trailing slash, and a
whole run with worker processes reading and writing S3."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from rendezvous_pipeline.initialize import handler as initialize_handler
from rendezvous_pipeline.payload import PayloadError
from rendezvous_pipeline.storage import LocalStorage, S3Storage, open_storage, run_prefix
from rendezvous_pipeline.summarize import handler as summarize_handler
from tests.pipeline.conftest import need_torch


@pytest.fixture
def s3(aws_env: str, monkeypatch: pytest.MonkeyPatch):
    """An S3 client on the moto server; handlers find it through AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    return boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")


def payload(**extra: object) -> dict:
    return {
        "bucket": "results",
        "data_bucket": "data",
        "data_prefix": "parts/",
        "result_path": "runs/1",
        "world_size": "4",
        "rendezvous_endpoint": "127.0.0.1:10000",
        **extra,
    }


def test_open_storage_tells_buckets_from_directories(tmp_path: Path) -> None:
    assert isinstance(open_storage("my-bucket"), S3Storage)
    assert open_storage("s3://my-bucket").bucket == "my-bucket"  # type: ignore[attr-defined]
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert isinstance(open_storage("./data"), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(ValueError, match="put key prefixes in data_prefix"):
        open_storage("s3://bucket/some/prefix")
    assert run_prefix("runs/1") == "runs/1/" and run_prefix("/runs/1/") == "runs/1/"


def test_local_storage_lists_like_s3(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    for key in ("runs/1/0.json", "runs/10/0.json", "runs/1/sub/x.json"):
        store.write(key, b"{}")
    assert store.list("runs/1/") == ["runs/1/0.json", "runs/1/sub/x.json"]
    assert store.list("runs/1") == ["runs/1/0.json", "runs/1/sub/x.json", "runs/10/0.json"]
    with pytest.raises(ValueError, match="escapes the storage root"):
        store.read("../outside")


def test_initialize_pages_past_1000_keys_in_natural_order(s3) -> None:
    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="results")
    keys = [f"parts/{i}.pt" for i in range(1, 1206)] + ["parts/readme.txt", "other/1.pt"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="data", Key=k, Body=b"x"), keys))

    out = initialize_handler(payload(world_size=4, max_concurrency="6"), None)
    assert out["num_files"] == 1205  # all pages, only .pt, only under the prefix
    assert out["world_size"] == 4 and out["max_concurrency"] == 6
    assert out["items_bucket"] == "results"
    assert out["items_key"] == "runs/1/_pipeline/items.json"
    items = json.loads(s3.get_object(Bucket="results", Key=out["items_key"])["Body"].read())
    assert [len(item["DATA_PATH"]) for item in items] == [302, 301, 301, 301]
    assert items[0]["DATA_PATH"][:3] == ["parts/1.pt", "parts/2.pt", "parts/3.pt"]
    assert items[0]["DATA_PATH"][9] == "parts/10.pt"
    assert items[3]["DATA_PATH"][-1] == "parts/1205.pt"
    assert {item["COMM_NAME"] for item in items} == {f"pipeline-{out['run_id']}"}

    limited = initialize_handler(payload(world_size=2, file_limit=3), None)
    items = json.loads(s3.get_object(Bucket="results", Key=limited["items_key"])["Body"].read())
    assert [item["DATA_PATH"] for item in items] == [["parts/1.pt", "parts/2.pt"], "parts/3.pt"]


def test_initialize_fails_before_fanning_out(s3) -> None:
    with pytest.raises(PayloadError) as info:
        initialize_handler({"bucket": "results", "S3_object_name": "m"}, None)
    text = str(info.value)
    for field in ("data_prefix", "result_path", "world_size", "rendezvous_endpoint"):
        assert f"missing field {field!r}" in text
    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="results")
    with pytest.raises(ValueError, match=r"no \.pt files under s3://data/parts/"):
        initialize_handler(payload(), None)


def test_summarize_uses_the_trailing_slash(s3) -> None:
    s3.create_bucket(Bucket="results")
    for run, ranks in (("runs/1", 2), ("runs/10", 3)):
        for rank in range(ranks):
            body = json.dumps(
                {"num_batches": 1, "rendezvous": {"rank": rank, "run": run, "num_samples": 5}}
            )
            s3.put_object(Bucket="results", Key=f"{run}/{rank}.json", Body=body)
    summary = summarize_handler({"bucket": "results", "result_path": "runs/1", "world_size": 2})
    combined = json.loads(
        s3.get_object(Bucket="results", Key="runs/1/combined_data.json")["Body"].read()
    )
    assert combined == [
        {"num_batches": 1, "rendezvous": {"rank": r, "run": "runs/1", "num_samples": 5}}
        for r in (0, 1)
    ]
    assert summary["num_samples"] == 10 and summary["num_batches"] == 2
    assert summary["combined_path"] == "s3://results/runs/1/combined_data.json"
    stored = json.loads(s3.get_object(Bucket="results", Key="runs/1/summary.json")["Body"].read())
    assert stored["ranks"] == 2
    with pytest.raises(RuntimeError, match=r"2 of 4 ranks wrote no result .* ranks 2, 3"):
        summarize_handler({"bucket": "results", "result_path": "runs/1", "world_size": 4})


@pytest.mark.torch
@pytest.mark.slow
def test_whole_run_on_s3(s3, tiny_data: Path, endpoint: str, tmp_path: Path) -> None:
    """The same handlers, storage on S3: Initialize, two worker processes, Summarize."""
    need_torch()
    from rendezvous_deploy.pipeline.local import run_ranks

    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="results")
    for name in ("1.pt", "2.pt", "10.pt"):
        s3.put_object(
            Bucket="data", Key=f"parts/{name}", Body=(tiny_data / "parts" / name).read_bytes()
        )
    init = initialize_handler(
        payload(world_size=2, rendezvous_endpoint=endpoint, batch_size=32, result_path="r/7"),
        None,
    )
    items = json.loads(s3.get_object(Bucket="results", Key=init["items_key"])["Body"].read())
    results = run_ranks(items, tmp_path / "items", timeout=240, cpus=2)
    assert [r["rendezvous"]["num_samples"] for r in results] == [80, 40]
    summary = summarize_handler(init, None)
    assert summary["num_samples"] == 120
    assert summary["global"]["count"] == 120
    rank1 = json.loads(s3.get_object(Bucket="results", Key="r/7/1.json")["Body"].read())
    assert rank1["result_path"] == "r/7"  # the run's prefix, as the users' workers write it
    assert rank1["rendezvous"]["result_file"] == "s3://results/r/7/1.json"
    assert rank1["data_path"] == "parts/10.pt"
    combined = json.loads(
        s3.get_object(Bucket="results", Key="r/7/combined_data.json")["Body"].read()
    )
    assert [c["rendezvous"]["rank"] for c in combined] == [0, 1]


@pytest.mark.torch
def test_fmi_worker_in_the_script_slot_on_s3(
    s3, tiny_data: Path, endpoint: str, tmp_path: Path
) -> None:
    """The users'-style worker (``import fmi``) as the payload's ``script``, read from S3,
    reading data from and writing their JSON to S3, as the Lambda worker runs it."""
    need_torch()
    from rendezvous_deploy.pipeline.local import run_ranks
    from rendezvous_pipeline.results import format_problems

    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="results")
    for name in ("1.pt", "2.pt", "10.pt"):
        body = (tiny_data / "parts" / name).read_bytes()
        s3.put_object(Bucket="data", Key=f"parts/{name}", Body=body)
    worker = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "fmi_worker.py"
    s3.put_object(Bucket="results", Key="scripts/fmi_worker.py", Body=worker.read_bytes())
    init = initialize_handler(
        payload(
            world_size=3,
            rendezvous_endpoint=endpoint,
            batch_size=16,
            result_path="r/fmi",
            script="scripts/fmi_worker.py",
        ),
        None,
    )
    items = json.loads(s3.get_object(Bucket="results", Key=init["items_key"])["Body"].read())
    assert {item["SCRIPT"] for item in items} == {"scripts/fmi_worker.py"}
    results = run_ranks(items, tmp_path / "items", timeout=240, cpus=2)
    assert [r["rendezvous"]["script"] for r in results] == ["scripts/fmi_worker.py"] * 3
    summarize_handler(init, None)

    def read(key: str) -> object:
        return json.loads(s3.get_object(Bucket="results", Key=key)["Body"].read())

    combined = read("r/fmi/combined_data.json")
    assert isinstance(combined, list)
    assert [format_problems(r) for r in combined] == [[], [], []]
    assert [r["data_path"] for r in combined] == ["parts/1.pt", "parts/2.pt", "parts/10.pt"]
    assert {r["result_path"] for r in combined} == {"r/fmi"}
    reduced = read("r/fmi/reduce.json")
    assert reduced["sum total_cpu_time (seconds)"] == pytest.approx(  # type: ignore[index]
        sum(r["total_cpu_time (seconds)"] for r in combined), rel=1e-12
    )

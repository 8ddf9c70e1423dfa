"""Each run's credential and job secret: minted for that run's names only, handed to every
rank, and never written to items, results or output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from rendezvous_pipeline import runauth
from rendezvous_pipeline.initialize import initialize
from tcpunch.credential import Verdict, verify
from tests.pipeline.conftest import need_torch

SECRET = b"k" * 43
ASL = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "statemachine.asl.json"


def test_a_run_credential_covers_its_pairings_and_no_other_runs() -> None:
    auth = runauth.run_auth("pipeline-r1", SECRET, ttl=600, now=1000.0)
    credential = auth[runauth.CREDENTIAL_FIELD]
    assert verify(SECRET, credential, "pipeline-r1#0-1", 1500.0) is Verdict.OK
    assert verify(SECRET, credential, "pipeline-r1#3-17", 1500.0) is Verdict.OK
    for other in ("pipeline-r10#0-1", "pipeline-r1", "pipeline-r2#0-1", "fmi_pair#0-1"):
        assert verify(SECRET, credential, other, 1500.0) is Verdict.WRONG_PREFIX, other
    assert verify(SECRET, credential, "pipeline-r1#0-1", 1600.0) is Verdict.EXPIRED
    assert verify(b"o" * 43, credential, "pipeline-r1#0-1", 1500.0) is Verdict.FORGED
    # A fresh job secret per run (32 random bytes), with or without a server secret.
    again = runauth.run_auth("pipeline-r1", None)
    assert set(again) == {runauth.JOB_SECRET_FIELD}
    assert len(auth[runauth.JOB_SECRET_FIELD]) >= 43
    assert again[runauth.JOB_SECRET_FIELD] != auth[runauth.JOB_SECRET_FIELD]


def test_the_maps_item_selector_hands_each_rank_its_item_and_the_runs_auth() -> None:
    document = json.loads(ASL.read_text())
    selector = document["States"]["Distributed Test"]["ItemSelector"]
    assert selector == {"item.$": "$$.Map.Item.Value", "auth.$": "$.auth"}
    item = {"RANK": 1, "COMM_NAME": "pipeline-r1"}
    auth = {"RENDEZVOUS_CREDENTIAL": "c", "FMI_SECRET": "j", "OTHER": "x"}
    merged = runauth.with_auth({"item": item, "auth": auth})
    assert merged == {**item, "RENDEZVOUS_CREDENTIAL": "c", "FMI_SECRET": "j"}
    assert runauth.with_auth(item) == item  # a plain item (local runs, older callers)
    assert runauth.without_auth(merged) == item
    assert runauth.rank_auth(item, {"FMI_SECRET": "e"}) == {"FMI_SECRET": "e"}
    assert runauth.rank_auth(merged, {"FMI_SECRET": "e"})["FMI_SECRET"] == "j"


def _payload(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data = tmp_path / "data"
    (data / "parts").mkdir(parents=True)
    for name in ("1.pt", "2.pt"):
        (data / "parts" / name).write_bytes(b"not read by Initialize")
    return {
        "bucket": str(tmp_path / "results"),
        "data_bucket": str(data),
        "data_prefix": "parts/",
        "result_path": "runs/r1",
        "world_size": 2,
        "rendezvous_endpoint": "127.0.0.1:10000",
        "run_id": "r1",
        **extra,
    }


def test_initialize_mints_from_secrets_manager_and_keeps_it_out_of_the_items(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `pipeline up` sets (the secret's ARN) is all Initialize needs; a rotated value
    ("NEW\\nOLD") mints with NEW."""
    manager = boto3.client("secretsmanager", endpoint_url=aws_env, region_name="us-east-1")
    new, old = "n" * 43, "o" * 43
    arn = manager.create_secret(Name="rendezvous/t/auth-secret", SecretString=f"{new}\n{old}\n")[
        "ARN"
    ]
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    monkeypatch.setenv(runauth.SECRET_ARN_ENV, arn)
    monkeypatch.setenv(runauth.TTL_ENV, "900")
    out = initialize(_payload(tmp_path))
    credential = out["auth"][runauth.CREDENTIAL_FIELD]
    assert out["comm_name"] == "pipeline-r1"
    assert verify(new.encode(), credential, "pipeline-r1#0-1", time.time()) is Verdict.OK
    assert int(credential.split(":", 1)[0]) - time.time() <= 900
    items_text = (tmp_path / "results" / out["items_key"]).read_text()
    assert credential not in items_text and out["auth"]["FMI_SECRET"] not in items_text
    assert "RENDEZVOUS_CREDENTIAL" not in items_text and "FMI_SECRET" not in items_text
    # A script with a fixed comm_name (FMI's fmi_pair): the credential is for that name.
    fixed = initialize(_payload(tmp_path / "b", comm_name="fmi_pair"))
    assert fixed["comm_name"] == "fmi_pair"
    items = json.loads((tmp_path / "b" / "results" / fixed["items_key"]).read_text())
    assert {i["COMM_NAME"] for i in items} == {"fmi_pair"}
    assert (
        verify(new.encode(), fixed["auth"]["RENDEZVOUS_CREDENTIAL"], "fmi_pair#0-1", time.time())
        is Verdict.OK
    )


def _files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.torch
@pytest.mark.slow
def test_local_runs_are_authenticated_with_their_own_credential(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """The in-process server runs with auth: ranks pair with the run's credential (and
    fail without one); neither it nor the job secret lands in any file or output."""
    need_torch()
    from rendezvous.embedded import BackgroundServer
    from rendezvous_deploy.pipeline import local

    handed: list[dict[str, str]] = []
    real = local.run_auth

    def spy(*args: Any) -> dict[str, str]:
        handed.append(real(*args))
        return handed[-1]

    monkeypatch.setattr(local, "run_auth", spy)
    with local.local_rendezvous(None) as server:
        assert server.auth_secret is not None and len(server.auth_secret) >= 43
        assert server.auth_secret.decode() not in repr(server)
        for _ in range(2):
            run = local.run_local(
                data_dir=tiny_data,
                results_dir=tmp_path / "results",
                world_size=2,
                endpoint=server.address,
                batch_size=16,
                data_prefix="parts/",
                timeout=240,
                cpus=2,
                auth_secret=server.auth_secret,
            )
            assert run.summary["num_samples"] == 120
    first, second = handed
    assert first["RENDEZVOUS_CREDENTIAL"] != second["RENDEZVOUS_CREDENTIAL"]
    assert first["FMI_SECRET"] != second["FMI_SECRET"]  # fresh per run
    written = _files_text(tmp_path / "results")
    shown = "".join(capfd.readouterr())
    for value in (*first.values(), *second.values(), server.auth_secret.decode()):
        assert value not in written and value not in shown

    # A server with auth refuses ranks without a credential: auth really is on.
    with (
        BackgroundServer(
            host="127.0.0.1", port=0, http_port=None, auth_secrets=(SECRET,)
        ) as strict,
        pytest.raises(local.PipelineFailed) as refused,
    ):
        local.run_local(
            data_dir=tiny_data,
            results_dir=tmp_path / "refused",
            world_size=2,
            endpoint=strict.address,
            batch_size=16,
            data_prefix="parts/",
            timeout=60,
            cpus=2,
        )
    assert "RendezvousRefused" in str(refused.value)
    assert "requires a credential" in str(refused.value)


@pytest.mark.torch
def test_users_fmi_worker_pairs_with_the_runs_credential(tiny_data: Path, tmp_path: Path) -> None:
    """The unchanged `import fmi` worker, against a server with auth: fmi.json says v2,
    $RENDEZVOUS_CREDENTIAL holds the run's credential for its fixed comm_name."""
    need_torch()
    from rendezvous_deploy.pipeline.local import local_rendezvous, run_local

    worker = Path(__file__).resolve().parents[2] / "examples" / "pipeline" / "fmi_worker.py"
    with local_rendezvous(None) as server:
        run = run_local(
            data_dir=tiny_data,
            results_dir=tmp_path / "results",
            world_size=2,
            endpoint=server.address,
            data_prefix="parts/",
            batch_size=16,
            script=worker,
            timeout=240,
            cpus=2,
            auth_secret=server.auth_secret,
            comm_name="fmi_pair",
        )
    reduced = json.loads((run.results_dir / "reduce.json").read_text())
    assert reduced["world_size"] == 2
    assert [o["returncode"] for o in run.added] == [0, 0]


SCRIPT = """
import hashlib, json, os, pathlib
item = json.loads(os.environ["PIPELINE_ITEM"])
config = json.loads(pathlib.Path(os.environ["FMI_CONFIG"]).read_text())
digest = lambda name: hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()
out = pathlib.Path(os.environ["S3_BUCKET"], os.environ["RESULT_PATH"], os.environ["RANK"] + ".json")
out.write_text(json.dumps({
    "credential": digest("RENDEZVOUS_CREDENTIAL"), "job_secret": digest("FMI_SECRET"),
    "item_keys": sorted(item), "protocol": config["backends"]["Direct"].get("protocol"),
}))
"""


def test_a_script_gets_the_runs_credential_and_job_secret_in_its_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No torch, no pairing: a script that reports (hashes of) what it was handed."""
    import hashlib

    from rendezvous_deploy.pipeline import local

    handed: list[dict[str, str]] = []
    real = local.run_auth
    monkeypatch.setattr(local, "run_auth", lambda *a: handed.append(real(*a)) or handed[-1])
    monkeypatch.setenv("FMI_SECRET", "stale-from-the-parent")  # never passed on
    script = tmp_path / "report_env.py"
    script.write_text(SCRIPT)
    payload = _payload(tmp_path)
    run = local.run_local(
        data_dir=Path(payload["data_bucket"]),
        results_dir=tmp_path / "res",
        world_size=2,
        endpoint="127.0.0.1:10000",
        data_prefix="parts/",
        script=script,
        timeout=60,
        cpus=2,
        auth_secret=SECRET,
        comm_name="fmi_pair",
    )
    (auth,) = handed
    for rank in (0, 1):
        seen = json.loads((run.results_dir / f"{rank}.json").read_text())
        assert (
            seen["credential"] == hashlib.sha256(auth["RENDEZVOUS_CREDENTIAL"].encode()).hexdigest()
        )
        assert seen["job_secret"] == hashlib.sha256(auth["FMI_SECRET"].encode()).hexdigest()
        assert "RENDEZVOUS_CREDENTIAL" not in seen["item_keys"]
        assert "FMI_SECRET" not in seen["item_keys"] and "COMM_NAME" in seen["item_keys"]
        assert seen["protocol"] == "v2"  # v1, FMI's default, cannot carry a credential
    assert verify(SECRET, auth["RENDEZVOUS_CREDENTIAL"], "fmi_pair#0-1", time.time()) is Verdict.OK
    written = _files_text(tmp_path / "res")
    assert auth["RENDEZVOUS_CREDENTIAL"] not in written and auth["FMI_SECRET"] not in written

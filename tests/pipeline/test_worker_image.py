"""The worker image's layout provides ``import fmi``: files placed as the Dockerfile's COPY
lines place them (the image itself needs torch wheels and a container engine), then the
worker handler runs an FMI-style script from there with nothing else on its path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "examples" / "pipeline" / "Dockerfile"

SCRIPT = """
import json, os, fmi
config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fmi.json")
comm = fmi.Communicator(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), config,
                        "fmi_pair", 512)
comm.hint(fmi.hints.fast)
comm.barrier()
total = comm.reduce(2.5, 0, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.double))
print(json.dumps({"fmi": fmi.__file__, "reduced": total}))
"""

HANDLER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from rendezvous_pipeline.worker import handler
print(json.dumps(handler(json.loads(sys.argv[2]))))
"""


def lay_out_image(root: Path) -> None:
    """Copy what the Dockerfile's COPY lines copy into ``root`` (LAMBDA_TASK_ROOT)."""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY ") or "wheels/" in line:
            continue
        *sources, dest = line.split()[1:]
        target = Path(dest.replace("${LAMBDA_TASK_ROOT}", str(root)))
        for pattern in sources:
            for source in sorted(REPO.glob(pattern.rstrip("/"))):
                if source.is_dir():
                    shutil.copytree(
                        source,
                        target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"),
                    )
                elif dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, target / source.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, target)


def test_image_layout_runs_an_fmi_script(endpoint: str, tmp_path: Path) -> None:
    root = tmp_path / "task"
    lay_out_image(root)
    assert (root / "fmi.py").read_text() == (REPO / "fmi_client/shim/fmi.py").read_text()
    assert (root / "rendezvous_pipeline/fmi_worker.py").is_file()
    bucket = tmp_path / "bucket"
    (bucket / "scripts").mkdir(parents=True)
    (bucket / "scripts" / "job.py").write_text(SCRIPT)
    item = {
        "S3_BUCKET": str(bucket),
        "S3_OBJECT_NAME": "",
        "SCRIPT": "scripts/job.py",
        "S3_OBJECT_TYPE": "folder",
        "WORLD_SIZE": 1,
        "RANK": 0,
        "DATA_BUCKET": str(bucket),
        "DATA_PREFIX": "",
        "DATA_PATH": None,
        "RESULT_PATH": "runs/img",
        "BATCH_SIZE": 4,
        "RENDEZVOUS_ENDPOINT": endpoint,
        "COMM_NAME": "img",
        "TIMEOUT": 30,
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-c", HANDLER, str(root), json.dumps(item)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    script_out, handler_out = lines
    assert script_out["reduced"] == 2.5
    assert script_out["fmi"] == str(root / "fmi_client" / "compat.py")  # fmi is our compat
    assert handler_out["rendezvous"]["returncode"] == 0

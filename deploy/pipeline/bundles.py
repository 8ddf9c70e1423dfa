"""What `pipeline up` ships: the handler zip, the fmi_client layer, the state machine's
definition and the worker image. Deterministic, so an unchanged tree changes nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import rendezvous_pipeline
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.pipeline.names import PipelineNames

PIPELINE_DIR = Path(rendezvous_pipeline.__file__).resolve().parent
ASL = PIPELINE_DIR / "statemachine.asl.json"
# Building the worker image needs a checkout of the repository (its build context).
REPO_ROOT = PIPELINE_DIR.parent.parent
DOCKERFILE = "examples/pipeline/Dockerfile"
# The image installs from wheels fetched on the host: the build itself needs no network.
WHEELS_SCRIPT = "examples/pipeline/build-wheels.sh"
#: Initialize's and Summarize's modules, zipped as rendezvous_pipeline/<file>.
HANDLER_FILES = (
    "__init__.py",
    "payload.py",
    "results.py",
    "runauth.py",
    "storage.py",
    "initialize.py",
    "summarize.py",
)
RUNTIME = "python3.12"


def _zip(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A deterministic zip: same files, same bytes, same CodeSha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def handler_zip() -> bytes:
    """Initialize and Summarize: the handlers exactly as they are in the repo."""
    return _zip(
        (f"rendezvous_pipeline/{name}", (PIPELINE_DIR / name).read_bytes())
        for name in HANDLER_FILES
    )


def layer_zip() -> bytes:
    """fmi_client and tcpunch under ``python/``, built by fmi_client's ``fmi-layer``, with
    the top-level ``fmi`` module (``--fmi-module``) so FMI-style code runs unchanged."""
    from fmi_client.layer import build_layer

    with tempfile.TemporaryDirectory(prefix="fmi-layer-") as tmp:
        path = Path(tmp) / "layer.zip"
        build_layer(path, fmi_module=True)
        return path.read_bytes()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def definition(initialize_arn: str, worker_arn: str, summarize_arn: str) -> dict[str, Any]:
    """The ASL document with the three function ARNs filled in."""
    text = ASL.read_text()  # "$" is everywhere in ASL: plain replacement, not Template
    for placeholder, arn in (
        ("${InitializeArn}", initialize_arn),
        ("${WorkerArn}", worker_arn),
        ("${SummarizeArn}", summarize_arn),
    ):
        text = text.replace(placeholder, arn)
    return json.loads(text)


def build_and_push_worker(
    aws: Aws, names: PipelineNames, on_progress: Callable[[str], None], client: Any = None
) -> str:
    """Build examples/pipeline/Dockerfile and push it to ECR; returns the image URI."""
    from types import SimpleNamespace

    from rendezvous_deploy.server.image import connect_docker, push_local_image

    client = client or connect_docker()
    local = f"{names.repository}:latest"
    on_progress(f"fetching torch and numpy wheels on this host ({WHEELS_SCRIPT})")
    fetched = subprocess.run(
        ["bash", str(REPO_ROOT / WHEELS_SCRIPT)], capture_output=True, text=True, check=False
    )
    if fetched.returncode != 0:
        raise DeployError(
            f"fetching the worker image's wheels failed ({WHEELS_SCRIPT}):\n"
            f"{fetched.stderr.strip()[-2000:]}"
        )
    on_progress(f"building {local} from {DOCKERFILE}")
    try:
        client.images.build(path=str(REPO_ROOT), dockerfile=DOCKERFILE, tag=local, rm=True)
    except Exception as err:
        raise DeployError(f"building the worker image failed: {err}") from err
    settings = SimpleNamespace(local_image=local, repository=names.repository)
    return push_local_image(aws, settings, on_progress, docker_client=client)  # type: ignore[arg-type]

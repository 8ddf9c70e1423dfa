"""The pipeline on AWS: deploy it (``up``), start executions (``run``), collect REPORT lines.

Nothing here keeps local state: every resource has a name derived from ``--name``, so
``run`` and ``report`` find what ``up`` made, from any machine. Each step is idempotent
(create when missing, update when different).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import rendezvous_pipeline
from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.pipeline import DEFAULT_PREFIX
from rendezvous_deploy.pipeline.report import ReportLine, parse_report_line
from rendezvous_deploy.roles import policy
from rendezvous_pipeline.runauth import SECRET_ARN_ENV

#: The pipeline's package (examples/pipeline/ in the repo, rendezvous_pipeline installed).
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
Step = Callable[[str, bool], None]  # (what happened, whether anything changed)


@dataclass(frozen=True)
class PipelineNames:
    """Every AWS resource name, derived from one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def initialize(self) -> str:
        return f"{self.prefix}-initialize"

    @property
    def worker(self) -> str:
        return f"{self.prefix}-worker"

    @property
    def summarize(self) -> str:
        return f"{self.prefix}-summarize"

    @property
    def layer(self) -> str:
        return f"{self.prefix}-fmi-client"

    @property
    def lambda_role(self) -> str:
        return f"{self.prefix}-lambda"

    @property
    def initialize_role(self) -> str:
        """Initialize's own role: the Lambda role's rights plus reading the server's auth
        secret, which the workers (running users' scripts) must not have."""
        return f"{self.prefix}-initialize"

    @property
    def states_role(self) -> str:
        return f"{self.prefix}-states"

    @property
    def state_machine(self) -> str:
        return self.prefix

    @property
    def repository(self) -> str:
        return f"{self.prefix}-worker"

    def functions(self) -> tuple[str, str, str]:
        return (self.initialize, self.worker, self.summarize)


@dataclass(frozen=True)
class UpSettings:
    names: PipelineNames
    image_uri: str | None = None  # None: build and push examples/pipeline/Dockerfile
    worker_memory_mb: int = 3008
    worker_timeout_s: int = 900
    small_memory_mb: int = 512
    small_timeout_s: int = 120  # the users' 3 s default killed Initialize
    # s3://bucket/prefix the functions only read (data, model, script) or read and write
    # (results). See s3_access; nothing given is an error unless any_bucket is set.
    read_locations: tuple[str, ...] = ()
    write_locations: tuple[str, ...] = ()
    any_bucket: bool = False
    # The `server up --name` whose auth secret Initialize mints credentials from; with
    # auth off, ranks meet a server that needs no credential.
    server_name: str = "rendezvous"
    auth: bool | None = None  # None: when the server has a secret; True: it must


# -- artefacts ---------------------------------------------------------------------------


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


# -- IAM -----------------------------------------------------------------------------------
# The roles' policies live in deploy/iam/pipeline-*.json (one source of truth, also read by
# the policy tests), filled and applied by rendezvous_deploy.roles, which the server uses too.
# ``${Key}`` placeholders take a string; a list element that is exactly ``"${Key}"`` takes
# a list of strings, spliced in (the S3 resources depend on --data and --results).

LAMBDA_TRUST = "trust-lambda"
STATES_TRUST = "pipeline-trust-states"
LAMBDA_POLICY = "pipeline-lambda"
STATES_POLICY = "pipeline-states"
ITEMS_FILE = "_pipeline/items.json"  # Initialize's ITEMS_NAME; the only key the Map reads
ROLE_DESCRIPTION = "made by rendezvous-deploy pipeline up"


def s3_location(text: str) -> tuple[str, str]:
    """``s3://bucket/prefix``, ``bucket/prefix`` or ``bucket`` -> (bucket, prefix)."""
    bucket, _, prefix = text.removeprefix("s3://").strip("/").partition("/")
    if not bucket:
        raise DeployError(f"{text!r} is not an S3 location: give a bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _objects(locations: Iterable[str], suffix: str = "*") -> list[str]:
    arns = []
    for location in locations:
        bucket, prefix = s3_location(location)
        arns.append(f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}{suffix}")
    return arns


def s3_access(
    read: tuple[str, ...] = (), write: tuple[str, ...] = (), *, any_bucket: bool = False
) -> dict[str, list[str]]:
    """The S3 resources of the roles: ``read`` locations (data, models, scripts) are
    read-only, ``write`` locations (results) read-write. Every bucket only when asked for
    (``any_bucket``): no location at all is an error, never a silent widening."""
    if any_bucket:
        return {
            "ListBuckets": ["arn:aws:s3:::*"],
            "ReadObjects": ["arn:aws:s3:::*/*"],
            "WriteObjects": ["arn:aws:s3:::*/*"],
            "ItemObjects": [f"arn:aws:s3:::*/*{ITEMS_FILE}"],
        }
    if not write:
        raise DeployError(
            "no S3 location for results: pass --results s3://BUCKET/PREFIX (written) and "
            "--data s3://BUCKET/PREFIX (read only) for the locations your payloads use, "
            "or --any-bucket to let the functions read and write every bucket"
        )
    names = sorted({s3_location(loc)[0] for loc in (*read, *write)})
    return {
        "ListBuckets": [f"arn:aws:s3:::{b}" for b in names],
        "ReadObjects": _objects((*read, *write)),
        "WriteObjects": _objects(write),
        "ItemObjects": _objects(write, f"*{ITEMS_FILE}"),
    }


def _runtime_values(
    region: str, account: str, names: PipelineNames, s3: dict[str, list[str]]
) -> dict[str, str | list[str]]:
    return {
        "Region": region,
        "Account": account,
        "Initialize": names.initialize,
        "Worker": names.worker,
        "Summarize": names.summarize,
        "StateMachine": names.state_machine,
        **s3,
    }


SECRET_STATEMENT = "ReadTheServersAuthSecret"


def lambda_policy(
    region: str,
    account: str,
    names: PipelineNames,
    s3: dict[str, list[str]],
    auth_secret_arn: str | None = None,
) -> dict[str, Any]:
    """The functions' role: their own log groups, and S3 as :func:`s3_access` says; with
    ``auth_secret_arn`` (Initialize's role only) reading exactly that secret too."""
    document = policy(
        LAMBDA_POLICY,
        **_runtime_values(region, account, names, s3),
        AuthSecretArn=auth_secret_arn or "",
    )
    if not auth_secret_arn:
        document["Statement"] = [
            s for s in document["Statement"] if s.get("Sid") != SECRET_STATEMENT
        ]
    return document


def states_policy(
    region: str, account: str, names: PipelineNames, s3: dict[str, list[str]]
) -> dict[str, Any]:
    """The state machine's role: invoke the three functions, run the Distributed Map's
    child executions of this state machine, read the Map's items file."""
    return policy(STATES_POLICY, **_runtime_values(region, account, names, s3))


def ensure_role(
    aws: Aws,
    name: str,
    trust: dict[str, Any],
    inline: dict[str, Any],
    boundary: str | None = None,
    on_change: roles.Change | None = None,
) -> tuple[str, bool]:
    """A role with the ``trust`` policy and one inline policy named after it, under the
    permissions boundary ``boundary``; (arn, changed)."""
    return roles.ensure_role(
        aws, name, trust, inline, description=ROLE_DESCRIPTION, boundary=boundary,
        on_change=on_change,
    )


# -- Lambda ----------------------------------------------------------------------------------


def ensure_layer(aws: Aws, name: str, content: bytes) -> tuple[str, bool]:
    """The layer version holding ``content``; publishes a new one only when it changed."""
    lam = aws.client("lambda")
    digest = sha256_b64(content)
    try:
        versions = lam.list_layer_versions(LayerName=name).get("LayerVersions", [])
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        versions = []
    for version in versions:
        if version.get("Description", "").endswith(digest):
            return str(version["LayerVersionArn"]), False
    published = lam.publish_layer_version(
        LayerName=name,
        Description=f"fmi_client for rendezvous pipeline sha256:{digest}",
        Content={"ZipFile": content},
        CompatibleRuntimes=[RUNTIME],
    )
    return str(published["LayerVersionArn"]), True


def _wait_updated(lam: Any, name: str, deadline_s: float = 120.0) -> None:
    """Lambda refuses a second update while the first is in progress: wait it out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        config = lam.get_function_configuration(FunctionName=name)
        if (
            config.get("LastUpdateStatus", "Successful") != "InProgress"
            and config.get("State", "Active") != "Pending"
        ):
            return
        time.sleep(1)
    raise DeployError(f"Lambda {name} is still updating after {deadline_s:.0f} s; retry `up`")


def _variables(config: dict[str, Any]) -> dict[str, str]:
    return dict((config.get("Environment") or {}).get("Variables") or {})


def ensure_function(
    aws: Aws, name: str, spec: dict[str, Any], on_change: roles.Change | None = None
) -> tuple[str, bool]:
    """Create ``name`` from ``spec`` (create_function arguments) or bring it up to date;
    each changed setting goes to ``on_change`` as old -> new."""
    report: roles.Change = on_change or (lambda _what, _old, _new: None)
    lam = aws.client("lambda")
    try:
        current = lam.get_function(FunctionName=name)
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        created = lam.create_function(FunctionName=name, **spec)
        return str(created["FunctionArn"]), True
    config = current["Configuration"]
    changed = False
    code = spec["Code"]
    if "ZipFile" in code and config.get("CodeSha256") != sha256_b64(code["ZipFile"]):
        lam.update_function_code(FunctionName=name, ZipFile=code["ZipFile"])
        changed = True
    if "ImageUri" in code and current.get("Code", {}).get("ImageUri") != code["ImageUri"]:
        lam.update_function_code(FunctionName=name, ImageUri=code["ImageUri"])
        report(f"function {name} image", current.get("Code", {}).get("ImageUri"), code["ImageUri"])
        changed = True
    wanted = {k: spec[k] for k in ("Role", "Timeout", "MemorySize", "Environment") if k in spec}
    if "Environment" in wanted:  # as get_function reports it ({} or absent: none)
        config = {**config, "Environment": {"Variables": _variables(config)}}
    layers = spec.get("Layers")
    have_layers = [layer["Arn"] for layer in config.get("Layers", [])]
    for key, value in wanted.items():
        if config.get(key) != value:
            report(f"function {name} {key}", config.get(key), value)
    if layers is not None and have_layers != layers:
        report(f"function {name} layers", ", ".join(have_layers), ", ".join(layers))
    if any(config.get(k) != v for k, v in wanted.items()) or (
        layers is not None and have_layers != layers
    ):
        if changed:
            _wait_updated(lam, name)
        extra = {"Layers": layers} if layers is not None else {}
        lam.update_function_configuration(FunctionName=name, **wanted, **extra)
        changed = True
    return str(config["FunctionArn"]), changed


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


@dataclass
class Deployment:
    initialize_arn: str
    worker_arn: str
    summarize_arn: str
    state_machine_arn: str
    layer_arn: str
    image_uri: str


def up(
    aws: Aws,
    settings: UpSettings,
    step: Step,
    on_progress: Callable[[str], None],
    on_change: roles.Change | None = None,
) -> Deployment:
    """Roles, layer, three functions and the state machine, each created or updated."""
    names = settings.names
    # Before anything is created: a missing Docker engine must cost nothing.
    docker = None
    if not settings.image_uri:
        from rendezvous_deploy.server.image import connect_docker

        docker = connect_docker()
    account = aws.client("sts").get_caller_identity()["Account"]
    region = aws.region_name
    boundary = roles.check_boundary(aws, account, roles.PIPELINE_BOUNDARY)
    secret_arn = find_auth_secret(aws, settings)
    if secret_arn:
        secret_name = secret_arn.rsplit(":", 1)[-1]  # (rich would show ":secret:" as an emoji)
        step(f"Initialize mints each run's credential from the server's {secret_name}", False)
    elif settings.auth is False:
        step("--no-auth: runs get no credential (only a server without auth admits them)",
             False)
    else:
        step(f"no auth secret for server {settings.server_name!r}: runs get no credential, "
             "so only a server without auth admits them (--auth makes this an error)", False)

    s3 = s3_access(
        settings.read_locations, settings.write_locations, any_bucket=settings.any_bucket
    )
    lambda_role, changed = ensure_role(
        aws,
        names.lambda_role,
        policy(LAMBDA_TRUST),
        lambda_policy(region, account, names, s3),
        boundary,
        on_change,
    )
    step(f"Lambda role {names.lambda_role}", changed)
    initialize_role, changed = ensure_role(
        aws,
        names.initialize_role,
        policy(LAMBDA_TRUST),
        lambda_policy(region, account, names, s3, secret_arn),
        boundary,
        on_change,
    )
    step(f"Initialize role {names.initialize_role}", changed)
    states_role, changed = ensure_role(
        aws,
        names.states_role,
        policy(STATES_TRUST, Account=account),
        states_policy(region, account, names, s3),
        boundary,
        on_change,
    )
    step(f"Step Functions role {names.states_role}", changed)

    layer_arn, changed = ensure_layer(aws, names.layer, layer_zip())
    step(f"fmi_client layer {layer_arn}", changed)

    code = handler_zip()
    arns: dict[str, str] = {}
    minting = {SECRET_ARN_ENV: secret_arn} if secret_arn else {}
    for name, handler, role, variables in (
        (names.initialize, "rendezvous_pipeline.initialize.handler", initialize_role, minting),
        (names.summarize, "rendezvous_pipeline.summarize.handler", lambda_role, {}),
    ):
        arns[name], changed = ensure_function(
            aws,
            name,
            {
                "Runtime": RUNTIME,
                "Role": role,
                "Environment": {"Variables": variables},
                "Handler": handler,
                "Code": {"ZipFile": code},
                "Timeout": settings.small_timeout_s,
                "MemorySize": settings.small_memory_mb,
                "Layers": [layer_arn],
                "Description": "rendezvous inference pipeline",
            },
            on_change,
        )
        step(f"zip function {name}", changed)

    image_uri = settings.image_uri or build_and_push_worker(aws, names, on_progress, docker)
    arns[names.worker], changed = ensure_function(
        aws,
        names.worker,
        {
            "PackageType": "Image",
            "Role": lambda_role,
            "Code": {"ImageUri": image_uri},
            "Timeout": settings.worker_timeout_s,
            "MemorySize": settings.worker_memory_mb,
            "Description": "rendezvous inference pipeline worker (one rank)",
        },
        on_change,
    )
    step(f"container function {names.worker} ({image_uri})", changed)

    document = json.dumps(
        definition(arns[names.initialize], arns[names.worker], arns[names.summarize]), indent=2
    )
    machine_arn, changed = ensure_state_machine(aws, names.state_machine, document, states_role)
    step(f"state machine {names.state_machine}", changed)
    return Deployment(
        arns[names.initialize],
        arns[names.worker],
        arns[names.summarize],
        machine_arn,
        layer_arn,
        image_uri,
    )


def find_auth_secret(aws: Aws, settings: UpSettings) -> str | None:
    """The ARN of the server's auth secret (``server up --name``), None with auth off or
    (auth not asked for) no secret; a DeployError when auth is asked for and none exists."""
    from rendezvous_deploy.server import authsecret

    if settings.auth is False:
        return None
    name = authsecret.secret_name(settings.server_name)
    try:  # metadata only: the deployer never reads the value
        found = aws.client("secretsmanager").describe_secret(SecretId=name)
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        found = None
    arn = str(found["ARN"]) if found and not found.get("DeletedDate") else None
    if arn is None and settings.auth:
        raise DeployError(
            f"no auth secret {name}: deploy the server first (`rendezvous-deploy server up "
            f"--name {settings.server_name}`), name it with --server-name, or pass --no-auth "
            "if the server runs without auth"
        )
    return arn


def find_state_machine(aws: Aws, name: str) -> str | None:
    sfn = aws.client("stepfunctions")
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page.get("stateMachines", []):
            if machine["name"] == name:
                return str(machine["stateMachineArn"])
    return None


def ensure_state_machine(aws: Aws, name: str, document: str, role: str) -> tuple[str, bool]:
    sfn = aws.client("stepfunctions")
    arn = find_state_machine(aws, name)
    if arn is None:
        created = sfn.create_state_machine(
            name=name, definition=document, roleArn=role, type="STANDARD"
        )
        return str(created["stateMachineArn"]), True
    current = sfn.describe_state_machine(stateMachineArn=arn)
    if json.loads(current["definition"]) == json.loads(document) and current["roleArn"] == role:
        return arn, False
    sfn.update_state_machine(stateMachineArn=arn, definition=document, roleArn=role)
    return arn, True


# -- run -----------------------------------------------------------------------------------


def execution_name(world_size: int, now: datetime | None = None) -> str:
    """``ws8-20260101T120000-1a2b3c``: sortable, unique, a valid run_id (<= 80 chars)."""
    now = now or datetime.now(timezone.utc)
    salt = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:6]
    return f"ws{world_size}-{now:%Y%m%dT%H%M%S}-{salt}"


def start_execution(
    aws: Aws, machine_arn: str, payload: dict[str, Any], world_size: int
) -> dict[str, Any]:
    """Start one execution of ``payload`` at ``world_size``; its name is the run_id.

    Each execution writes under its own ``<result_path>/<run_id>`` (as local runs do), so
    two world sizes, or two sweeps, never overwrite each other's items and results.
    """
    name = execution_name(world_size)
    base = str(payload.get("result_path") or "").strip("/")
    result_path = f"{base}/{name}" if base else name
    body = {**payload, "world_size": world_size, "run_id": name, "result_path": result_path}
    started = aws.client("stepfunctions").start_execution(
        stateMachineArn=machine_arn, name=name, input=json.dumps(body)
    )
    return {
        "world_size": world_size,
        "run_id": name,
        "result_path": result_path,
        "execution_arn": started["executionArn"],
    }


TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def wait_execution(
    aws: Aws, arn: str, timeout_s: float, on_status: Callable[[str], None], poll_s: float = 2.0
) -> dict[str, Any]:
    """Poll until the execution ends or ``timeout_s`` passes (then the last status)."""
    sfn = aws.client("stepfunctions")
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=arn)
        status = described["status"]
        on_status(status)
        if status in TERMINAL or time.monotonic() >= deadline:
            return described
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def failure_message(described: dict[str, Any]) -> str:
    """The failed rank's message from an execution's error/cause."""
    cause = described.get("cause") or ""
    try:
        parsed = json.loads(cause)
        cause = parsed.get("errorMessage") or parsed.get("Cause") or cause
    except (ValueError, AttributeError):
        pass
    return f"{described.get('error') or 'failed'}: {cause}".strip()


def rank_failure(aws: Aws, execution_arn: str) -> str | None:
    """The first failed rank's own message, from the Distributed Map's child executions.

    The parent execution only says the Map exceeded its tolerated failures; children run
    as STANDARD executions (see the ASL) so their errors can be read back here.
    """
    sfn = aws.client("stepfunctions")
    try:
        map_runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
        for map_run in map_runs:
            failed = sfn.list_executions(
                mapRunArn=map_run["mapRunArn"], statusFilter="FAILED", maxResults=1
            ).get("executions", [])
            for child in failed:
                return failure_message(sfn.describe_execution(executionArn=child["executionArn"]))
    except Exception:  # best effort: the parent's own error is reported anyway
        return None
    return None


# -- report ----------------------------------------------------------------------------------


def _millis(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(float(value) * 1000)


def log_events(
    aws: Aws, group: str, start_ms: int, end_ms: int, pattern: str | None = None
) -> list[str]:
    """Every message in ``group`` between the times (all pages); [] when there is no group."""
    logs = aws.client("logs")
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "endTime": end_ms}
    if pattern:
        kwargs["filterPattern"] = pattern
    messages: list[str] = []
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            messages.extend(event["message"] for event in page.get("events", []))
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
    return messages


def report_lines_for_run(messages: Iterable[str], run_id: str) -> list[ReportLine]:
    """The REPORT lines of the requests that logged ``PIPELINE_RUN <run_id>``. Pure."""
    messages = list(messages)
    marker = f"PIPELINE_RUN {run_id} "
    request_ids = set()
    for message in messages:
        if message.startswith(marker) and "RequestId: " in message:
            request_ids.add(message.rsplit("RequestId: ", 1)[1].strip())
    lines = []
    for message in messages:
        if message.startswith("REPORT "):
            parsed = parse_report_line(message)
            if parsed.request_id in request_ids:
                lines.append(parsed)
    return lines


def collect_execution(aws: Aws, names: PipelineNames, execution_arn: str) -> dict[str, Any]:
    """World size, run id and the REPORT lines of every Lambda the execution ran."""
    described = aws.client("stepfunctions").describe_execution(executionArn=execution_arn)
    payload = json.loads(described.get("input") or "{}")
    run_id = str(payload.get("run_id") or described["name"])
    start = _millis(described["startDate"]) - 60_000
    stop = described.get("stopDate") or datetime.now(timezone.utc)
    end = _millis(stop + timedelta(minutes=5) if isinstance(stop, datetime) else stop)
    lines: list[ReportLine] = []
    for function in names.functions():
        messages = log_events(aws, f"/aws/lambda/{function}", start, end)
        lines += report_lines_for_run(messages, run_id)
    return {
        "execution_arn": execution_arn,
        "run_id": run_id,
        "status": described["status"],
        "world_size": int(payload.get("world_size") or 0),
        "lines": lines,
        "input": payload,
    }

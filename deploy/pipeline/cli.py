"""``rendezvous-deploy pipeline ...``: generate data, run locally or on AWS, report costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rendezvous_deploy import validate
from rendezvous_deploy.config import aws_options, config_option
from rendezvous_deploy.errors import friendly
from rendezvous_deploy.pipeline import DEFAULT_PREFIX, RUNS_FILE

DEFAULT_RESULTS = Path("build/pipeline")


def name_option(help_text: str) -> Any:
    """--name: the resource prefix, with one default for every pipeline command."""
    return click.option("--name", default=DEFAULT_PREFIX, show_default=True, help=help_text)


def runs_file_option(help_text: str) -> Any:
    """--runs-file: where `run` records executions and `report` finds them."""
    return click.option(
        "--runs-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=RUNS_FILE,
        show_default=True,
        help=help_text,
    )


def parse_world_sizes(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]; every entry a positive integer."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(
                f"{part!r} is not a positive integer; give sizes like 1,2,4,8",
                param_hint="--world-size",
            )
        sizes.append(int(part))
    return sizes


def _aws(region: str | None, endpoint_url: str | None, profile: str | None) -> Any:
    from rendezvous_deploy.aws import Aws

    return Aws(region=region, endpoint_url=endpoint_url, profile=profile)


def _reporter() -> Any:
    from rendezvous_deploy.progress import Reporter

    return Reporter()


@click.group()
def pipeline() -> None:
    """Run the inference pipeline locally or on AWS and report its performance.

    \b
    Locally, in one command (data from `pipeline generate`):
      rendezvous-deploy pipeline run --local --world-size 1,2,4,8 --data DIR
    On AWS:
      rendezvous-deploy pipeline up --image-uri URI      (or --build)
      rendezvous-deploy pipeline run --payload payload.json --world-size 8,16,32
      rendezvous-deploy pipeline report
    """


@pipeline.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--files",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of .pt partitions.",
)
@click.option(
    "--samples",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Samples per partition.",
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same data.")
@click.option(
    "--force",
    is_flag=True,
    help="Delete the .pt files already in OUT_DIR first (without it, a directory that "
    "holds .pt files is refused, so two data sets never mix).",
)
@friendly
def generate(out_dir: Path, files: int, samples: int, seed: int, force: bool) -> None:
    """Write synthetic .pt partitions in the users' data format to OUT_DIR.

    Files are named 1.pt .. N.pt; each holds TensorDataset(image [n,5,32,32], magnitude
    [n,5], redshift [n]) with a relation the shipped model learnt.
    """
    from rendezvous_pipeline.data import generate as write

    old = sorted(out_dir.rglob("*.pt")) if out_dir.is_dir() else []
    if old and not force:
        raise click.ClickException(
            f"{out_dir} already holds {len(old)} .pt file(s) (e.g. {old[0]}): a run reads "
            "every .pt file under --data, so the data sets would mix. Pick an empty "
            "directory, or pass --force to delete them first."
        )
    for path in old:
        path.unlink()
    paths = write(out_dir, files, samples, seed)
    click.echo(f"wrote {len(paths)} partitions x {samples} samples to {out_dir}")


@pipeline.command()
@config_option("pipeline")
@click.option(
    "--local",
    "local",
    is_flag=True,
    help="Run on this machine: one process per rank, in-process rendezvous server.",
)
@click.option(
    "--world-size",
    "world_sizes",
    default="1,2,4,8",
    show_default=True,
    help="Comma-separated world sizes; each one is a full run (a sweep).",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="--local: directory holding the .pt partitions.",
)
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="--local: where per-rank results, combined files and the plot go.",
)
@click.option("--rendezvous", help="--local: use this host:port instead of an in-process server.")
@click.option("--batch-size", default=256, show_default=True, help="--local: samples per batch.")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="--local: your model file (state_dict of the shipped architecture, or "
    "TorchScript taking (image, magnitude)).",
)
@click.option(
    "--script",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="--local: run this Python script per rank instead of the built-in "
    "inference (RANK and WORLD_SIZE in its environment; it writes "
    "$S3_BUCKET/$RESULT_PATH/$RANK.json).",
)
@click.option(
    "--comm-name",
    default=None,
    help="--local: the comm_name --script passes to fmi.Communicator when it uses a fixed "
    "one (FMI workers' 'fmi_pair'): the run's credential is minted for it (default: the "
    "run's own, $COMM_NAME). On AWS: the payload's comm_name.",
)
@click.option(
    "--relay",
    type=click.Choice(["auto", "never", "always"]),
    metavar="MODE",
    default=None,
    help="--local: how ranks link: auto (the default) punches and relays through the "
    "rendezvous server where that fails, never only punches, always relays every link. "
    "On AWS: the payload's relay.",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds one run (one world size) may take; a run still going then is a failure. "
    "Default: --local 600; AWS: the deployed worker's timeout plus Initialize's and "
    "Summarize's plus 60 (1200 with the defaults of `pipeline up`).",
)
@click.option(
    "--payload",
    "payload_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="AWS: the state machine's input payload (JSON file).",
)
@name_option("AWS: the name prefix `pipeline up` used.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="AWS: wait for each execution to end before starting the next (--no-wait starts "
    "them all at once; each world size still writes under its own result_path).",
)
@runs_file_option("AWS: where the started executions are recorded for `pipeline report`.")
@aws_options
@friendly
def run(
    local: bool,
    world_sizes: str,
    data_dir: Path | None,
    results_dir: Path,
    rendezvous: str | None,
    batch_size: int,
    model: Path | None,
    script: Path | None,
    comm_name: str | None,
    relay: str | None,
    timeout: float | None,
    payload_file: Path | None,
    name: str,
    wait: bool,
    runs_file: Path,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
) -> None:
    """Run the pipeline for each world size and print the performance table.

    With --local: Initialize, one worker process per rank and Summarize on this
    machine, a table (world size, wall (s), per rank (s), samples/s, MAE, comm (s),
    comm share, relayed links, total CPU time (s), throughput (Mbit/s); also in
    sweep.csv) and a PNG
    plot of the sweep. Without it: start one Step Functions execution per world size
    of the deployed pipeline (see `pipeline up`) and show their progress.
    """
    sizes = parse_world_sizes(world_sizes)
    if timeout is not None and timeout <= 0:
        raise click.BadParameter(
            f"{timeout} is not a positive number of seconds", param_hint="--timeout"
        )
    if not local:
        validate.resource_name(name, "--name", validate.PIPELINE_SUFFIXES)
    if rendezvous is not None:
        from rendezvous_pipeline.payload import validate_endpoint

        if validate_endpoint(rendezvous):
            raise click.BadParameter(
                f"expected host:port with a port 1-65535, e.g. 127.0.0.1:10000; got {rendezvous!r}",
                param_hint="--rendezvous",
            )
    if local:
        if data_dir is None:
            raise click.UsageError(
                "--local needs --data DIR (make some with `rendezvous-deploy pipeline "
                "generate DIR`)"
            )
        _run_local(
            sizes, data_dir, results_dir, rendezvous, batch_size, model, script, timeout or 600.0,
            comm_name, relay,
        )
        return
    if payload_file is None:
        raise click.UsageError("give --local to run here, or --payload FILE to run on AWS")
    _run_aws(
        sizes, payload_file, name, wait, runs_file, timeout, _aws(region, endpoint_url, profile)
    )


def _run_local(
    sizes: list[int],
    data_dir: Path,
    results_dir: Path,
    rendezvous: str | None,
    batch_size: int,
    model: Path | None,
    script: Path | None,
    timeout: float,
    comm_name: str | None = None,
    relay: str | None = None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rendezvous_deploy.pipeline.local import PipelineFailed, local_rendezvous, run_local
    from rendezvous_deploy.pipeline.sweep import plot_sweep, sweep_rows, write_sweep

    if not data_dir.is_dir() or not any(data_dir.rglob("*.pt")):
        raise click.UsageError(
            f"no .pt files in {data_dir}: run `rendezvous-deploy pipeline generate {data_dir}`"
        )
    reporter = _reporter()
    runs = []
    with local_rendezvous(rendezvous) as server:
        endpoint = server.address
        where = "" if rendezvous else " (in process, auth on from a fresh secret)"
        minted = "a credential and " if server.auth_secret else ""
        reporter.step(f"rendezvous server at {endpoint}{where}; each run gets {minted}"
                      "its own job secret")
        with Progress(
            TextColumn("world size {task.fields[ws]:>3}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ranks done"),
            TimeElapsedColumn(),
            console=reporter.console,
            transient=False,
        ) as progress:
            for size in sizes:
                task = progress.add_task("run", total=size, ws=size)

                def advance(done: int, _total: int, task: Any = task) -> None:
                    progress.update(task, completed=done)

                try:
                    runs.append(
                        run_local(
                            data_dir=data_dir,
                            results_dir=results_dir,
                            world_size=size,
                            endpoint=endpoint,
                            batch_size=batch_size,
                            model=model,
                            script=script,
                            timeout=timeout,
                            progress=advance,
                            auth_secret=server.auth_secret,
                            comm_name=comm_name,
                            relay=relay,
                        )
                    )
                except PipelineFailed as err:
                    raise click.ClickException(f"world size {size}: {err}") from err
    if script is not None:
        reporter.step(f"script runs finished; results under {results_dir}/runs/")
        return
    columns, rows = sweep_rows(runs)
    samples = ", ".join(sorted({str(r.samples) for r in runs}))
    reporter.table(
        f"Inference pipeline, local, one process per rank ({samples} samples)", columns, rows
    )
    csv_path = write_sweep(runs, results_dir / "sweep.csv")
    reporter.note(f"table: {csv_path}")
    reporter.note(f"combined results: {runs[-1].results_dir / 'combined_data.json'}")
    stale = results_dir / "sweep.png"
    stale.unlink(missing_ok=True)  # an old plot must not pass for this sweep's
    if len(runs) > 1:
        png = plot_sweep(runs, stale)
        reporter.note(f"plot: {png}")
        click.echo(str(png))
    else:
        reporter.note("no plot: a sweep plot needs two or more world sizes (--world-size 1,2,4)")


def _run_aws(
    sizes: list[int],
    payload_file: Path,
    name: str,
    wait: bool,
    runs_file: Path,
    timeout: float | None,
    aws: Any,
) -> None:
    from rendezvous_deploy.pipeline import cloud, preflight
    from rendezvous_pipeline.payload import PayloadError, validate_payload

    try:
        payload = json.loads(payload_file.read_text())
    except json.JSONDecodeError as err:
        raise click.BadParameter(
            f"{payload_file} is not JSON: {err}", param_hint="--payload"
        ) from err
    if not isinstance(payload, dict):
        raise click.BadParameter(
            f'{payload_file}: the payload must be a JSON object ({{"bucket": ...}}), '
            f"got a JSON {type(payload).__name__}",
            param_hint="--payload",
        )
    try:
        for size in sizes:  # the same check Initialize makes, before anything starts
            validate_payload({**payload, "world_size": size})
    except PayloadError as err:
        raise click.ClickException(str(err)) from err
    names = cloud.PipelineNames(name)
    machine = cloud.find_state_machine(aws, names.state_machine)
    if machine is None:
        raise click.ClickException(
            f"no state machine named {name!r}: deploy it with `rendezvous-deploy pipeline up`"
        )
    refused = preflight.outside_scope(aws, names, payload)
    if refused:
        raise click.ClickException(
            f"the payload would {' and '.join(refused)}, which `pipeline up` did not let the "
            f"functions do (its --data and --results): run `pipeline up` again with those "
            f"locations, or change the payload's bucket, data_prefix or result_path"
        )
    reporter = _reporter()
    needed = preflight.execution_budget(aws, names)
    if timeout is None:
        timeout = needed
    elif wait and timeout < needed:
        reporter.warn(
            f"--timeout {timeout:g} s is shorter than one execution may take ({needed:g} s: "
            "the worker's timeout plus Initialize's and Summarize's): a slow run will be "
            "reported as timed out while it still runs"
        )
    started: list[dict[str, Any]] = []
    failure: str | None = None
    try:
        for size in sizes:
            record = cloud.start_execution(aws, machine, payload, size)
            started.append(record)
            reporter.step(
                f"world size {size}: started {record['execution_arn']} "
                f"(results under {record['result_path']})"
            )
            if not wait:
                continue
            with reporter.waiting(f"world size {size}", timeout=timeout) as update:
                described = cloud.wait_execution(aws, record["execution_arn"], timeout, update)
            status = described["status"]
            record["status"] = status
            if status == "SUCCEEDED":
                reporter.step(f"world size {size}: SUCCEEDED")
                continue
            if status in cloud.TERMINAL:
                message = cloud.rank_failure(aws, described["executionArn"])
                why = message or cloud.failure_message(described)
                failure = f"world size {size}: execution {record['execution_arn']} {status}: {why}"
            else:
                failure = (
                    f"world size {size}: execution {record['execution_arn']} still {status} "
                    f"after --timeout {timeout:g} s; it was left running (stop it with "
                    f"`aws stepfunctions stop-execution --execution-arn "
                    f"{record['execution_arn']}`) and the next world sizes were not started"
                )
            reporter.fail(failure.split(": ", 1)[1])
            break
    finally:
        previous = json.loads(runs_file.read_text()) if runs_file.exists() else []
        runs_file.write_text(json.dumps(previous + started, indent=2))
        reporter.note(f"executions recorded in {runs_file}; `pipeline report` reads them")
    if failure:
        raise click.ClickException(failure)


@pipeline.command()
@config_option("pipeline")
@name_option("The name prefix `pipeline up` used.")
@click.option("--image-uri", help="Worker image already in ECR (skips building).")
@click.option(
    "--build",
    is_flag=True,
    help="Build examples/pipeline/Dockerfile with Docker and push it to ECR.",
)
@click.option(
    "--worker-memory",
    default=3008,
    show_default=True,
    help="Worker Lambda memory in MB (it is billed, used or not).",
)
@click.option("--worker-timeout", default=900, show_default=True, help="Worker timeout (s).")
@click.option(
    "--data",
    "data_locations",
    multiple=True,
    metavar="s3://BUCKET[/PREFIX]",
    help="Where payloads' data, models and scripts are: the functions may only read there "
    "(repeatable).",
)
@click.option(
    "--results",
    "result_locations",
    multiple=True,
    metavar="s3://BUCKET[/PREFIX]",
    help="Where payloads' results go (their bucket/result_path): the functions may read and "
    "write there, and nowhere else (repeatable; required unless --any-bucket).",
)
@click.option(
    "--any-bucket",
    is_flag=True,
    help="Let the functions read and write every bucket of the account instead.",
)
@click.option(
    "--server-name",
    default="rendezvous",
    show_default=True,
    help="The --name of `server up`: Initialize mints each run's credential from that "
    "server's auth secret (rendezvous/NAME/auth-secret), and only it may read it.",
)
@click.option(
    "--auth/--no-auth",
    default=None,
    help="--auth: the server's auth secret must exist (else an error). --no-auth: mint no "
    "credentials (for a server without auth). Default: use the secret when it exists.",
)
@aws_options
@friendly
def up(
    name: str,
    image_uri: str | None,
    build: bool,
    worker_memory: int,
    worker_timeout: int,
    data_locations: tuple[str, ...],
    result_locations: tuple[str, ...],
    any_bucket: bool,
    server_name: str,
    auth: bool | None,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
) -> None:
    """Deploy the pipeline: IAM roles, the fmi_client layer, the Initialize and Summarize
    zip functions, the worker container function and the state machine.

    Idempotent: run it again after changing code or settings; unchanged parts are left
    alone (shown dimmed).
    """
    from rendezvous_deploy.aws import DeployError
    from rendezvous_deploy.pipeline import cloud

    if not image_uri and not build:
        raise click.UsageError("give --image-uri URI (an image in ECR) or --build")
    validate.resource_name(name, "--name", validate.PIPELINE_SUFFIXES)
    if image_uri:
        validate.lambda_image(image_uri, "--image-uri")
    validate.lambda_memory(worker_memory, "--worker-memory")
    validate.lambda_timeout(worker_timeout, "--worker-timeout")
    for option, locations in (("--data", data_locations), ("--results", result_locations)):
        for location in locations:
            validate.bucket(location, option)
    if any_bucket and (data_locations or result_locations):
        raise click.UsageError(
            "--any-bucket widens --data and --results to every bucket: give one or the other"
        )
    if not any_bucket and not result_locations:
        raise click.UsageError(
            "give --results s3://BUCKET/PREFIX (where results are written) and --data "
            "s3://BUCKET/PREFIX (read only) for the locations your payloads use; the "
            "functions' S3 access is limited to them (or --any-bucket for every bucket)"
        )
    reporter = _reporter()
    settings = cloud.UpSettings(
        names=cloud.PipelineNames(name),
        image_uri=image_uri,
        worker_memory_mb=worker_memory,
        worker_timeout_s=worker_timeout,
        read_locations=data_locations,
        write_locations=result_locations,
        any_bucket=any_bucket,
        server_name=server_name,
        auth=auth,
    )
    validate.resource_name(server_name, "--server-name", validate.SERVER_SUFFIXES)
    aws = _aws(region, endpoint_url, profile)
    if any_bucket:
        reporter.warn("--any-bucket: the functions may read and write every S3 bucket")
    try:
        with reporter.waiting("deploying") as update:
            deployment = cloud.up(aws, settings, reporter.step, update, reporter.change)
    except DeployError as err:
        raise click.ClickException(str(err)) from err
    click.echo(deployment.state_machine_arn)


@pipeline.command()
@config_option("pipeline")
@name_option("The name prefix `pipeline up` used.")
@click.option(
    "--execution",
    "executions",
    multiple=True,
    help="Execution ARN to report (repeatable; default: all in --runs-file).",
)
@runs_file_option("Executions recorded by `pipeline run`.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build/pipeline-report"),
    show_default=True,
    help="Where report.md, report.csv and report.png go.",
)
@click.option(
    "--arch",
    type=click.Choice(["x86_64", "arm64"]),
    default="x86_64",
    show_default=True,
    help="Price list to apply.",
)
@aws_options
@friendly
def report(
    name: str,
    executions: tuple[str, ...],
    runs_file: Path,
    out_dir: Path,
    arch: str,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
) -> None:
    """Turn the CloudWatch REPORT lines of each execution's Lambdas into the cost table,
    and each run's combined_data.json into the users' figures.

    One row per execution: world size, requests, durations, billed GB-seconds, memory
    used and configured, cost in USD (the pricing is printed with the table); then per
    run, from the users' per-rank keys: partition size, total CPU time, throughput and
    memory. Written as Markdown, CSV and a PNG plot of CPU time, throughput and cost per
    world size (one line per partition size when the runs differ in it).
    """
    from rendezvous_deploy.pipeline import cloud, figures
    from rendezvous_deploy.pipeline.report import (
        ARM,
        COLUMNS,
        X86,
        row_cells,
        summarize_lines,
        to_csv,
        to_markdown,
    )

    validate.resource_name(name, "--name", validate.PIPELINE_SUFFIXES)
    arns = list(executions)
    if not arns:
        if not runs_file.exists():
            raise click.UsageError(
                f"no --execution given and {runs_file} does not exist; "
                "start runs with `pipeline run --payload ...` first"
            )
        arns = _recorded_executions(runs_file)
    pricing = ARM if arch == "arm64" else X86
    aws = _aws(region, endpoint_url, profile)
    names = cloud.PipelineNames(name)
    reporter = _reporter()
    rows = []
    empty = []
    runs = []
    unread = []
    with reporter.waiting("reading CloudWatch logs and results") as update:
        for arn in arns:
            update(arn.rsplit(":", 1)[-1])
            found = _collect(cloud, aws, names, arn)
            if not found["lines"]:
                empty.append((arn, found["status"]))
            row = summarize_lines(found["run_id"], found["world_size"], found["lines"], pricing)
            rows.append(row)
            cost = row.cost_usd if found["lines"] else None
            runs.append(_figures(figures, aws, found, cost, unread))
    for arn, status in empty:
        reporter.warn(
            f"no REPORT lines yet for {arn} ({status}): still running, or logs not "
            "delivered yet; its row shows zeros"
        )
    for label, why in unread:
        reporter.warn(f"no per-rank results for {label}: {why}; its figures show n/a")
    for run in runs:
        if run.left_out and run.ranks > len(run.left_out):
            reporter.warn(
                f"{run.label}: left out of its figures (not in the users' format): "
                f"{run.left_out_text()}"
            )
    rows.sort(key=lambda r: r.world_size)
    runs.sort(key=lambda r: (r.partition_mb or 0.0, r.world_size))
    reporter.table("Inference pipeline on AWS Lambda", COLUMNS, [row_cells(r) for r in rows])
    figure_cells = [figures.cells(r) for r in runs]
    reporter.table("Per run, from the users' per-rank keys", figures.COLUMNS, figure_cells)
    reporter.note(f"pricing: {pricing.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, pricing) + "\n" + figures.to_markdown(runs)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.csv").write_text(to_csv(rows))
    (out_dir / "runs.csv").write_text(figures.to_csv(runs))
    png = figures.plot(runs, out_dir / "report.png", f"cost: {pricing.name}")
    reporter.note(
        f"wrote {out_dir / 'report.md'}, {out_dir / 'report.csv'}, {out_dir / 'runs.csv'}, {png}"
    )
    click.echo(str(out_dir / "report.md"))


def _figures(
    figures: Any, aws: Any, found: dict[str, Any], cost: float | None, unread: list[Any]
) -> Any:
    """The users' figures of one execution from its results; why not, added to ``unread``."""
    payload = found.get("input") or {}
    combined, partition, why = figures.read_run(payload, found["run_id"], aws)
    if why:
        unread.append((found["run_id"], why))
    return figures.run_figures(
        found["run_id"], found["world_size"], combined, cost_usd=cost, partition=partition
    )


def _recorded_executions(runs_file: Path) -> list[str]:
    """The execution ARNs `pipeline run` recorded, or a message naming what is wrong."""
    hint = "fix or delete it, or pass --execution ARN"
    try:
        records = json.loads(runs_file.read_text())
    except json.JSONDecodeError as err:
        raise click.ClickException(f"{runs_file} is not valid JSON ({err}): {hint}") from err
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and isinstance(r.get("execution_arn"), str) for r in records
    ):
        raise click.ClickException(
            f"{runs_file} is not a list of recorded runs (objects with execution_arn): {hint}"
        )
    return [r["execution_arn"] for r in records]


def _collect(cloud: Any, aws: Any, names: Any, arn: str) -> dict[str, Any]:
    """cloud.collect_execution, with a clear message for an execution that is not there."""
    from rendezvous_deploy.aws import error_code

    try:
        return dict(cloud.collect_execution(aws, names, arn))
    except Exception as err:
        if error_code(err) in ("ExecutionDoesNotExist", "InvalidArn"):
            raise click.ClickException(
                f"execution {arn} does not exist in this account/region "
                f"({error_code(err)}): check --execution, --runs-file and --region"
            ) from err
        raise

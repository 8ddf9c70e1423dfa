"""``rendezvous-deploy pipeline up`` and ``report``: the AWS side of the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rendezvous_deploy import validate
from rendezvous_deploy.config import aws_options, config_option
from rendezvous_deploy.errors import friendly
from rendezvous_deploy.pipeline import cli_common
from rendezvous_deploy.pipeline.cli_common import (
    name_option,
    runs_file_option,
)
from rendezvous_deploy.pipeline.names import PipelineNames, UpSettings


@click.command()
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
    reporter = cli_common.reporter()
    settings = UpSettings(
        names=PipelineNames(name),
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
    aws = cli_common.aws_session(region, endpoint_url, profile)
    if any_bucket:
        reporter.warn("--any-bucket: the functions may read and write every S3 bucket")
    try:
        with reporter.waiting("deploying") as update:
            deployment = cloud.up(aws, settings, reporter.step, update, reporter.change)
    except DeployError as err:
        raise click.ClickException(str(err)) from err
    click.echo(deployment.state_machine_arn)


@click.command()
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
    from rendezvous_deploy.pipeline import executions as runs_on_aws
    from rendezvous_deploy.pipeline import figures
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
    aws = cli_common.aws_session(region, endpoint_url, profile)
    names = PipelineNames(name)
    reporter = cli_common.reporter()
    rows = []
    empty = []
    runs = []
    unread = []
    with reporter.waiting("reading CloudWatch logs and results") as update:
        for arn in arns:
            update(arn.rsplit(":", 1)[-1])
            found = _collect(runs_on_aws, aws, names, arn)
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


def _collect(runs_on_aws: Any, aws: Any, names: Any, arn: str) -> dict[str, Any]:
    """collect_execution, with a clear message for an execution that is not there."""
    from rendezvous_deploy.aws import error_code

    try:
        return dict(runs_on_aws.collect_execution(aws, names, arn))
    except Exception as err:
        if error_code(err) in ("ExecutionDoesNotExist", "InvalidArn"):
            raise click.ClickException(
                f"execution {arn} does not exist in this account/region "
                f"({error_code(err)}): check --execution, --runs-file and --region"
            ) from err
        raise

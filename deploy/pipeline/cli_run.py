"""``rendezvous-deploy pipeline run``: one run per world size, here or on AWS."""

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
    DEFAULT_RESULTS,
    name_option,
    parse_world_sizes,
    runs_file_option,
)
from rendezvous_deploy.pipeline.names import PipelineNames


@click.command()
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
            sizes,
            data_dir,
            results_dir,
            rendezvous,
            batch_size,
            model,
            script,
            timeout or 600.0,
            comm_name,
            relay,
        )
        return
    if payload_file is None:
        raise click.UsageError("give --local to run here, or --payload FILE to run on AWS")
    _run_aws(
        sizes,
        payload_file,
        name,
        wait,
        runs_file,
        timeout,
        cli_common.aws_session(region, endpoint_url, profile),
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
    reporter = cli_common.reporter()
    runs = []
    with local_rendezvous(rendezvous) as server:
        endpoint = server.address
        where = "" if rendezvous else " (in process, auth on from a fresh secret)"
        minted = "a credential and " if server.auth_secret else ""
        reporter.step(
            f"rendezvous server at {endpoint}{where}; each run gets {minted}its own job secret"
        )
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
    from rendezvous_deploy.pipeline import executions, preflight
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
    names = PipelineNames(name)
    machine = executions.find_state_machine(aws, names.state_machine)
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
    reporter = cli_common.reporter()
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
            record = executions.start_execution(aws, machine, payload, size)
            started.append(record)
            reporter.step(
                f"world size {size}: started {record['execution_arn']} "
                f"(results under {record['result_path']})"
            )
            if not wait:
                continue
            with reporter.waiting(f"world size {size}", timeout=timeout) as update:
                described = executions.wait_execution(aws, record["execution_arn"], timeout, update)
            status = described["status"]
            record["status"] = status
            if status == "SUCCEEDED":
                reporter.step(f"world size {size}: SUCCEEDED")
                continue
            if status in executions.TERMINAL:
                message = executions.rank_failure(aws, described["executionArn"])
                why = message or executions.failure_message(described)
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

"""What every ``rendezvous-deploy pipeline`` command shares: options, the AWS session, progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

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


def aws_session(region: str | None, endpoint_url: str | None, profile: str | None) -> Any:
    from rendezvous_deploy.aws import Aws

    return Aws(region=region, endpoint_url=endpoint_url, profile=profile)


def reporter() -> Any:
    from rendezvous_deploy.progress import Reporter

    return Reporter()

"""``rendezvous-deploy pipeline ...``: generate data, run locally or on AWS, report costs."""

from __future__ import annotations

from pathlib import Path

import click

from rendezvous_deploy.errors import friendly
from rendezvous_deploy.pipeline.cli_aws import report, up
from rendezvous_deploy.pipeline.cli_run import run


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


for _command in (run, up, report):
    pipeline.add_command(_command)

"""The ``rendezvous-deploy`` command: one group per concern, each in its own package."""

from __future__ import annotations

import click

from rendezvous import __version__
from rendezvous.optional_deps import require_extra

# Checked before the command modules import them: a clear pip command, not a traceback.
require_extra("rendezvous-deploy", "aws", ("boto3", "rich", "dns"))

from rendezvous_deploy.pipeline.cli import pipeline  # noqa: E402
from rendezvous_deploy.server.cli import server  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rendezvous-deploy")
def main() -> None:
    """Deploy the rendezvous server to AWS Fargate and run the inference pipeline.

    AWS credentials and region come from boto3's standard chain (environment,
    ~/.aws, instance role). Use --endpoint-url to aim at an AWS emulator.
    """


main.add_command(server)
main.add_command(pipeline)

"""``rendezvous-deploy pipeline ...``"""

import click


@click.group()
def pipeline() -> None:
    """Run the inference pipeline locally or on AWS and report its performance."""

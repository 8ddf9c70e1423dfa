"""``rendezvous-deploy server ...``"""

import click


@click.group()
def server() -> None:
    """Deploy and operate the rendezvous server on ECS Fargate."""

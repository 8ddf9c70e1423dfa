"""One decorator that turns the errors a user can act on into a clean message, no traceback.

Every ``rendezvous-deploy`` command uses it: DeployError (our own, already phrased for the
user), AWS errors (botocore), payload mistakes and unreadable JSON files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rendezvous_deploy.aws import DeployError

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn known failures into one clear line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rendezvous_pipeline.payload import PayloadError

        try:
            return func(*args, **kwargs)
        except (DeployError, PayloadError) as err:
            raise click.ClickException(str(err)) from err
        except json.JSONDecodeError as err:
            raise click.ClickException(f"not valid JSON: {err}") from err
        except Exception as err:
            module = type(err).__module__
            if module.startswith(("botocore", "boto3")):
                raise click.ClickException(f"AWS call failed: {err}") from err
            raise

    return wrapper  # type: ignore[return-value]

"""Options from a TOML file, the environment and flags, in that order of strength.

Every ``rendezvous-deploy`` command takes ``--config FILE``. The file holds one table per
command group (``[server]``, ``[pipeline]``) plus an optional shared ``[aws]`` table;
keys are option names (``image-uri`` or ``image_uri``). Precedence: flag > environment
variable (``RENDEZVOUS_DEPLOY_<OPTION>``) > file > built-in default.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "RENDEZVOUS_DEPLOY_"
SHARED_TABLE = "aws"
F = TypeVar("F", bound=Callable[..., Any])


def env_name(option: str) -> str:
    """``image-uri`` -> ``RENDEZVOUS_DEPLOY_IMAGE_URI``."""
    return ENV_PREFIX + option.replace("-", "_").upper()


def load_table(path: Path, table: str) -> dict[str, Any]:
    """The shared ``[aws]`` table merged with ``[table]``, keys normalised to underscores."""
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise click.BadParameter(f"{path} does not exist", param_hint="--config") from None
    except tomllib.TOMLDecodeError as err:
        raise click.BadParameter(
            f"{path} is not valid TOML: {err}", param_hint="--config"
        ) from None
    merged: dict[str, Any] = {}
    for name in (SHARED_TABLE, table):
        section = document.get(name, {})
        if not isinstance(section, dict):
            raise click.BadParameter(f"[{name}] in {path} must be a table", param_hint="--config")
        merged.update({key.replace("-", "_"): value for key, value in section.items()})
    return merged


SHARED_KEYS = frozenset({"region", "endpoint_url", "profile"})


def _option_names(command: click.Command) -> dict[str, str]:
    """Config key -> parameter name: ``dns_server`` (from ``--dns-server``) -> ``dns_servers``."""
    names: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or not param.name:
            continue
        names[param.name] = param.name
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:].replace("-", "_")] = param.name
    return names


def _apply_config(table: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return value
        values = load_table(Path(value), table)
        names = _option_names(ctx.command)
        # One table serves every command of the group: keys of sibling commands are fine.
        group = ctx.parent.command if ctx.parent else None
        siblings = group.commands.values() if isinstance(group, click.Group) else []
        everywhere = {key for command in siblings for key in _option_names(command)}
        unknown = sorted(set(values) - set(names) - everywhere - SHARED_KEYS)
        if unknown:
            known = sorted({n for n in {*names, *everywhere} if n not in ("config", "help")})
            raise click.BadParameter(
                f"unknown key(s) {', '.join(unknown)} in [{table}] of {value}; "
                f"known: {', '.join(k.replace('_', '-') for k in known)}",
                param_hint="--config",
            )
        values = {names.get(key, key): item for key, item in values.items()}
        ctx.default_map = {**(ctx.default_map or {}), **values}
        return value

    return callback


def config_option(table: str) -> Callable[[F], F]:
    """``--config FILE``: read defaults for the command's options from ``[table]``."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=str),
        envvar=env_name("config"),
        is_eager=True,
        expose_value=False,
        callback=_apply_config(table),
        help=f"TOML file with defaults for these options, in its [{table}] table "
        f"(and a shared [{SHARED_TABLE}] table). Env: {env_name('config')}.",
    )


def aws_options(func: F) -> F:
    """``--region``, ``--endpoint-url`` and ``--profile``, shared by every AWS command."""
    for option in reversed(
        [
            click.option("--region", envvar=env_name("region"), help="AWS region "
                         "(default: boto3's chain, e.g. AWS_REGION)."),
            click.option("--endpoint-url", envvar=env_name("endpoint_url"),
                         help="Send every AWS call here, e.g. an emulator such as moto."),
            click.option("--profile", envvar=env_name("profile"),
                         help="Named profile from ~/.aws/config."),
        ]
    ):
        func = option(func)
    return func

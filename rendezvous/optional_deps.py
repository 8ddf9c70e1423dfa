"""Optional extras: entry points check for them and say what to install, not a traceback.

The base install is the dependency-free client; the server and the deploy tooling live
in extras (``rendezvous[server]``, ``rendezvous[aws]``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be imported here."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(command: str, extra: str, modules: Iterable[str]) -> None:
    """Exit with status 2 and a pip command when any of ``modules`` is missing."""
    missing = missing_modules(modules)
    if missing:
        sys.stderr.write(
            f"{command}: {', '.join(missing)} not installed; these come with the "
            f"'{extra}' extra: pip install 'rendezvous[{extra}]'\n"
        )
        raise SystemExit(2)

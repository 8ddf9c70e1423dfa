"""Entry points without their extra installed say what to pip install (no traceback)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rendezvous.optional_deps import missing_modules

BLOCKING_RUNNER = textwrap.dedent(
    """
    import importlib.abc, sys

    blocked = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    module, _, attr = sys.argv[2].partition(":")
    sys.argv = [sys.argv[2]] + sys.argv[3:]
    imported = __import__(module, fromlist=["_"])
    if attr:
        getattr(imported, attr)()
    """
)


def run_without(blocked: str, entry: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_RUNNER, blocked, entry, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_modules_names_exactly_the_absent_ones():
    assert missing_modules(["json", "no_such_module_xyz", "socket"]) == ["no_such_module_xyz"]


@pytest.mark.parametrize("blocked", ["aiohttp", "pythonjsonlogger", "prometheus_client"])
def test_serve_without_server_extra_says_what_to_install(blocked):
    result = run_without(blocked, "rendezvous.cli:main", "serve", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert blocked in result.stderr
    assert "pip install 'rendezvous[server]'" in result.stderr


def test_deploy_without_aws_extra_says_what_to_install():
    result = run_without("boto3,rich", "rendezvous_deploy.cli:main", "--help")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "boto3, rich" in result.stderr
    assert "pip install 'rendezvous[aws]'" in result.stderr


def test_client_needs_no_extra():
    """The client (and its FMI drop-in) import with every optional dependency blocked."""
    result = run_without(
        "aiohttp,pythonjsonlogger,prometheus_client,boto3,rich,dns,click,numpy",
        "fmi_client.compat",
    )
    assert result.returncode == 0, result.stderr

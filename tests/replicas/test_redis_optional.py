"""The redis package is an extra: the server and the PROXY parser import without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rendezvous.optional_deps import missing_modules

WITHOUT_REDIS = textwrap.dedent(
    """
    import importlib, importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "redis":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    try:
        importlib.import_module(sys.argv[1])
    except ModuleNotFoundError as exc:
        print("missing", exc.name)
    else:
        print("imported")
    """
)


def import_without_redis(module: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_REDIS, module],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["rendezvous.server", "rendezvous.proxy_protocol"])
def test_imports_without_redis(module):
    assert import_without_redis(module) == "imported"


def test_shared_room_needs_the_redis_extra():
    # so `serve --redis` must check with require_extra("serve --redis", "redis", ["redis"])
    assert import_without_redis("rendezvous.shared_room") == "missing redis"
    assert missing_modules(["redis"]) == []  # the test venv has the extra

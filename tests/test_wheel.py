"""The built wheel: only our own distinct top-level names, with everything they need.

A wheel that put ``deploy`` or ``examples`` at the top of site-packages would collide
with any other distribution's package of that name; tests, benchmarks and the lab
equipment are not for users at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from testbed.procs import REPO

SHIPPED = {"rendezvous", "fmi_client", "tcpunch", "rendezvous_deploy", "rendezvous_pipeline"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the checkout's files (tracked and new, not ignored), as
    # docker/build-wheels.sh does: setuptools leaves a build/ folder behind in its source.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split("\n")  # fmt: skip
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("-q", "-w", str(out), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("rendezvous-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_has_only_distinct_top_level_names(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert {name for name in top if not name.endswith(".dist-info")} == SHIPPED


def test_wheel_ships_type_markers_data_and_the_fmi_shim(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for package in ("rendezvous", "fmi_client", "tcpunch"):
        assert f"{package}/py.typed" in names
    assert "fmi_client/shim/fmi.py" in names  # fmi-layer build --fmi-module copies it
    assert "rendezvous_pipeline/statemachine.asl.json" in names
    assert any(name.startswith("rendezvous_deploy/iam/") for name in names)


def test_wheel_entry_points_name_shipped_modules(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = (n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    targets = [
        line.split("=", 1)[1].strip().split(":")[0]
        for line in wheel.read(entry_points).decode().splitlines()
        if "=" in line
    ]
    assert len(targets) == 3, targets  # rendezvous, rendezvous-deploy, fmi-layer
    names = set(wheel.namelist())
    for module in targets:
        assert module.split(".")[0] in SHIPPED
        assert module.replace(".", "/") + ".py" in names, module

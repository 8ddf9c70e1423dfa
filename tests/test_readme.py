"""The README's Python examples run as pasted (each in a fresh interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,  # not the repo: the installed packages must be enough
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example printed nothing"


def test_communicator_example_prints_what_its_comment_says(tmp_path: Path):
    # the client section's example (the Security section's one comes first)
    block = next(b for b in BLOCKS if "Communicator(" in b and "secret=" not in b)
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    compact = " ".join(result.stdout.split())
    assert "array([3., 3., 3., 3.], dtype=float32), 3," in compact
    assert "[[8., 7.], [7., 8.]]" in compact


def test_secured_example_prints_what_its_comment_says(tmp_path: Path):
    block = next(b for b in BLOCKS if "Communicator(" in b and "secret=job_secret" in b)
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "([3.0, 3.0, 3.0, 3.0], 'SSLSocket')" in result.stdout


@pytest.mark.parametrize("fmi_module", [False, True])
def test_the_layer_figures_are_what_a_build_writes(fmi_module: bool, tmp_path: Path):
    """The README's file count is exact and its size within 25% (it drifts with edits)."""
    import zipfile

    from fmi_client.layer import build_layer

    bullet = README.read_text().split("- **Lambda layer**", 1)[1].split("\n- ", 1)[0]
    stated = re.findall(r"\((\d+) files, \**([\d.]+) KiB", bullet)
    assert len(stated) == 2, bullet  # without and with --fmi-module
    files, kib = stated[fmi_module]
    zip_path = tmp_path / "layer.zip"
    build_layer(zip_path, fmi_module)
    entries = [i for i in zipfile.ZipFile(zip_path).infolist() if not i.is_dir()]
    assert len(entries) == int(files)
    assert abs(zip_path.stat().st_size / 1024 - float(kib)) <= 0.25 * float(kib)

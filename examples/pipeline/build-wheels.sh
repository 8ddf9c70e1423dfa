#!/usr/bin/env bash
# Put the worker image's Python dependencies (torch, numpy) into examples/pipeline/wheels/
# (git-ignored), so the image build itself needs no network: build machines often reach
# package registries only from the host, and TLS from inside a build container may fail.
#
#   examples/pipeline/build-wheels.sh [PYTHON_VERSION]    # default 3.12 (the Lambda base)
#
# pip runs on the host with the host's own configuration, so an index or mirror set there
# (for example a CPU-only torch index in pip.conf or PIP_EXTRA_INDEX_URL) is honoured.
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
version="${1:-3.12}"
out=examples/pipeline/wheels
mkdir -p "$out"
echo "build-wheels: torch and numpy for CPython $version (x86_64 Linux) into $out/"
"$python" -m pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --implementation cp --python-version "$version" \
    --abi "cp${version/./}" --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    --dest "$out" "${TORCH_SPEC:-torch==2.13.0}" "numpy>=1.23"
echo "build-wheels: $(ls "$out"/*.whl | wc -l) wheels in $out/"

#!/usr/bin/env bash
# Put every wheel the image installs into docker/wheels/ (git-ignored), so that the image
# build needs no network: our build machines reach package registries only from the host.
#
#   docker/build-wheels.sh [PYTHON_VERSION ...]     # default 3.12 (python:3.12-slim)
#
# The project's own wheel is built from this checkout; its dependencies (the `server`
# extra and click) are binary wheels for each target CPython on x86_64 Linux. One
# directory can hold wheels for several versions: pip in the image picks its own.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
out=docker/wheels
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.12)
mkdir -p "$out"

# The project wheel: rebuilt every time (the version rarely changes, the code does), from
# a copy of the checkout's files (tracked and new, not ignored) so that no stale build/
# directory in the checkout leaks old modules into it.
rm -f "$out"/rendezvous-*.whl
src="$(mktemp -d /tmp/rendezvous-src.XXXXXX)"
trap 'rm -rf "$src"' EXIT
sources=(setup.cfg setup.py pyproject.toml README.md rendezvous fmi_client tcpunch deploy)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- "${sources[@]}" |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        xargs -0 cp --parents -t "$src"
else
    cp -r "${sources[@]}" "$src"
fi
# Fixed timestamps: the same sources give the same wheel, so the image build reuses its cache.
SOURCE_DATE_EPOCH=315532800 \
    "$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$src"
wheel="$(ls "$out"/rendezvous-*.whl)"
touch -d @315532800 "$wheel"

for version in "${versions[@]}"; do
    abi="cp${version/./}"
    echo "build-wheels: dependencies for CPython $version into $out/"
    "$python" -m pip download --quiet --disable-pip-version-check \
        --only-binary=:all: --implementation cp --python-version "$version" --abi "$abi" \
        --abi abi3 --abi none \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
        --platform any \
        --dest "$out" "rendezvous[server] @ file://$PWD/$wheel"
done
echo "build-wheels: $(ls "$out"/*.whl | wc -l) wheels in $out/"

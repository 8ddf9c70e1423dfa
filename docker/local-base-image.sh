#!/usr/bin/env bash
# Build a minimal Debian bookworm image with python3 from Debian's packages, for machines
# that reach Debian's mirror but no image registry (our CI). Pass the result to the build
# as BASE_IMAGE. Needs root, debootstrap and podman.
#
#   docker/local-base-image.sh [IMAGE]      # default localhost/rendezvous-base:bookworm
#
# Idempotent: does nothing when IMAGE already exists (set REBUILD=1 to force).
set -euo pipefail
image="${1:-localhost/rendezvous-base:bookworm}"
# The mirror this host's apt already uses (deb822 or one-line sources), unless
# DEBIAN_MIRROR says otherwise; with neither, debootstrap's own default.
host_mirror() {
    local uri
    uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    [ -n "$uri" ] || uri="$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null || true)"
    printf '%s' "$uri"
}
mirror="${DEBIAN_MIRROR:-$(host_mirror)}"

if [ "$(id -u)" != 0 ]; then
    echo "local-base-image: debootstrap needs root; run it as root or use BASE_IMAGE=python:3.12-slim" >&2
    exit 1
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || {
        echo "local-base-image: $tool is missing; install it (bash .ci/system-deps)" >&2
        exit 1
    }
done
if [ -z "${REBUILD:-}" ] && podman image exists "$image"; then
    echo "local-base-image: $image exists"
    exit 0
fi

rootfs="$(mktemp -d /tmp/rendezvous-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "local-base-image: debootstrap bookworm into $rootfs (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
    bookworm "$rootfs" ${mirror:+"$mirror"} >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    echo "local-base-image: debootstrap failed (is ${mirror:-the default Debian mirror} reachable?)" >&2
    exit 1
}
rm -f "$rootfs.log"
# What a container never needs: package caches and lists, docs, man pages, translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
find "$rootfs"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
echo "local-base-image: importing as $image"
tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
podman image inspect --format '{{.Size}}' "$image" |
    awk -v i="$image" '{printf "local-base-image: %s is %.0f MB\n", i, $1 / 1e6}'

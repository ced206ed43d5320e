#!/usr/bin/env bash
# Builds the `self-judge` image without any registry: a minimal Debian bookworm root
# file system from debootstrap (Debian's package mirror is reachable) imported as the
# base image, plus the release binary built on this host.
# Needs: docker (daemon running), debootstrap. Usage: docker/build.sh [TAG]
# SKIP_BUILD=1 uses the existing target/release/self-judge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag="${1:-self-judge:latest}"
base="self-judge-base:bookworm"
rootfs="" ctx=""
trap 'rm -rf ${rootfs:+"$rootfs"} ${ctx:+"$ctx"}' EXIT
if ! docker image inspect "$base" >/dev/null 2>&1; then
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" >&2
    tar -C "$rootfs" -c . | docker import - "$base"
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin self-judge
# Build from a small staged context holding only what the Dockerfile copies: the repo
# root has no .dockerignore, and target/ plus .venv/ would send gigabytes to the daemon.
ctx="$(mktemp -d)"
mkdir -p "$ctx/target/release"
cp target/release/self-judge "$ctx/target/release/"
cp -r configs "$ctx/"
docker build -f docker/Dockerfile --build-arg BASE="$base" -t "$tag" "$ctx"
echo "$tag"

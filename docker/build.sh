#!/usr/bin/env bash
# Builds the images of docker/compose.yaml without any registry: a minimal Debian
# bookworm root file system from debootstrap (Debian's package mirror is reachable),
# holding Debian's haproxy, prometheus and curl, imported as the one base image; the
# server image adds the release binary built on this host, its configs and the shipped
# judge adapter.
# Needs: docker (daemon running), debootstrap. Usage: docker/build.sh [TAG]
# Images: TAG (default self-judge:latest), self-judge-haproxy:latest,
# self-judge-prometheus:latest. SKIP_BUILD=1 uses the existing target/release/self-judge.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag="${1:-self-judge:latest}"
# The tag names what the base holds, so a base from an older build.sh is not reused.
base="self-judge-base:bookworm-haproxy-prometheus"
rootfs="" ctx=""
trap 'rm -rf ${rootfs:+"$rootfs"} ${ctx:+"$ctx"}' EXIT
if ! docker image inspect "$base" >/dev/null 2>&1; then
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include=haproxy,prometheus,curl,ca-certificates \
        bookworm "$rootfs" >&2
    # The packages' own services never run in a container: drop the apt caches only.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base"
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin self-judge
# Build from a small staged context holding only what the Dockerfile copies: the repo
# root has no .dockerignore, and target/ plus .venv/ would send gigabytes to the daemon.
ctx="$(mktemp -d)"
mkdir -p "$ctx/target/release"
cp target/release/self-judge "$ctx/target/release/"
cp -r configs adapters "$ctx/"
docker build -q -f docker/Dockerfile --build-arg BASE="$base" -t "$tag" "$ctx" >&2
docker build -q --build-arg BASE="$base" -t self-judge-haproxy:latest docker/haproxy >&2
docker build -q --build-arg BASE="$base" -t self-judge-prometheus:latest docker/prometheus >&2
echo "$tag"

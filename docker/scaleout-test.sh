#!/usr/bin/env bash
# Scale-out test: docker/compose.yaml with 3 replicas of the shipped judge on this
# machine, HAProxy with context affinity in front, Prometheus scraping; then the checks
# of docker/scaleout_test.py (affinity, 300 requests from 16 clients, prefix-cache hit
# ratio with and without affinity, a replica killed under load, the dashboard's queries).
# Not part of scripts/test.sh: it needs a Docker engine and takes several minutes.
# Needs: a running Docker engine (here: `dockerd --iptables=false &`), docker-compose,
# debootstrap (Debian packages). SKIP_IMAGES=1 reuses the images of docker/build.sh,
# KEEP=1 leaves the project running afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
docker info >/dev/null 2>&1 || { echo "no Docker engine answers (start one: dockerd --iptables=false &)" >&2; exit 1; }
command -v docker-compose >/dev/null || { echo "docker-compose is required (Debian package docker-compose)" >&2; exit 1; }
scripts/fetch-smollm2.sh >/dev/null
[ -n "${SKIP_IMAGES:-}" ] || docker/build.sh >/dev/null
export PROJECT="${PROJECT:-self-judge-scaleout}"
# Ports apart from a default `docker-compose up`, so both can run on one machine.
export LB_PORT="${LB_PORT:-18080}" LB_ROUND_ROBIN_PORT="${LB_ROUND_ROBIN_PORT:-18081}"
export LB_STATS_PORT="${LB_STATS_PORT:-18404}" PROMETHEUS_PORT="${PROMETHEUS_PORT:-19090}"
# Replicas that are easy to fill: 429s appear under the 16 clients, and the prefix
# cache is small enough that where a context's requests land decides its hit ratio.
export MAX_CONCURRENT_REQUESTS="${MAX_CONCURRENT_REQUESTS:-16}"
export PREFIX_CACHE_MB="${PREFIX_CACHE_MB:-256}" REPLICA_THREADS="${REPLICA_THREADS:-1}"
export SELF_JUDGE_MODELS="$PWD/models"
compose=(docker-compose -f docker/compose.yaml -p "$PROJECT")
[ -n "${KEEP:-}" ] || trap '"${compose[@]}" down -t 5 >/dev/null 2>&1 || true' EXIT
"${compose[@]}" up -d --force-recreate --scale self-judge=3 >/dev/null 2>&1
python3 docker/scaleout_test.py

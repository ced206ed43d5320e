#!/usr/bin/env bash
# The project's test command (README and CI): fetch the real model, then run every
# test of the workspace in release mode (candle is ~150x slower in debug builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-smollm2.sh >/dev/null
cargo test --release --workspace "$@"

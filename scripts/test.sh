#!/usr/bin/env bash
# The project's test command (README and CI): fetch the real model, then run every
# test of the workspace in release mode (candle is ~150x slower in debug builds), and
# print the totals on the last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-smollm2.sh >/dev/null
# The official client libraries tests/clients.rs drives the server with.
SELF_JUDGE_CLIENT_PYTHON="$(scripts/client-venv.sh)"
export SELF_JUDGE_CLIENT_PYTHON
# torch + transformers + PEFT, which load the checkpoints `training jsft` writes
# (training/tests/transformers_parity.rs).
SELF_JUDGE_TORCH_PYTHON="$(scripts/torch-venv.sh)"
export SELF_JUDGE_TORCH_PYTHON
# The layering: no import cycle between our files or top-level modules.
python3 scripts/check_cycles.py --self-test
python3 scripts/check_cycles.py
# Kubernetes manifests, balancer and Prometheus configs, dashboard queries (offline).
scripts/deploy/check.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
# The served OpenAPI spec against the server: schemathesis, every default check.
if [ "$status" -eq 0 ]; then
    scripts/schemathesis/run.sh 2>&1 | tee -a "$log" || status=$?
fi
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "${passed} passed, ${failed} failed"
exit "$status"

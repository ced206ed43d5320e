#!/usr/bin/env bash
# A virtual environment with torch, transformers and PEFT (PyPI, pinned), for the test
# that loads what `training jsft` writes into transformers + PEFT
# (training/tests/transformers_parity.rs). Usage: scripts/torch-venv.sh [DIR]; DIR
# defaults to <repo>/target/torch-venv. Prints the environment's python.
#
# PyPI's torch for linux x86_64 is the CUDA build: it runs on the CPU, but it loads the
# nvidia-* runtime wheels at import, so they come too (~5.5 GB on disk, about 100 s to
# install here).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO_ROOT/target/torch-venv}"
PKGS=(
    torch==2.15.0 transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0
    safetensors==0.8.0 numpy==2.4.6 accelerate==1.15.0 PyYAML==6.0.4 peft==0.21.2
)
if ! "$DIR/bin/python" -c "import torch, transformers, peft" 2>/dev/null; then
    python3 -m venv "$DIR" >&2
    "$DIR/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
fi
echo "$DIR/bin/python"

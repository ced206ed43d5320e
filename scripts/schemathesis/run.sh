#!/usr/bin/env bash
# schemathesis (PyPI, pinned) with all its default checks against the served spec of a
# tiny model, without and with an API key; fails on any finding. Needs the release
# binary (scripts/test.sh builds it first). Usage: scripts/schemathesis/run.sh [EXAMPLES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EXAMPLES="${1:-100}"
VENV="$ROOT/target/schemathesis-venv"
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
BIN="$ROOT/target/release/self-judge"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
pid=""
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=""; }
trap stop EXIT

# Starts the server on a free port and sets $base once /health answers 200.
start() {
    local out; out="$(mktemp)"
    "$BIN" serve --model tests/fixtures/tiny-chat --config configs/smollm2_hh_judge.yaml \
        --port 0 --max-new-tokens 32 "$@" >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 300); do
        base="$(grep -o 'http://[0-9.:]*' "$out" || true)"
        if [ -n "$base" ] && curl -sf "$base/health" >/dev/null; then rm -f "$out"; return; fi
        sleep 0.1
    done
    echo "the server did not start" >&2; exit 1
}

run() {
    "$VENV/bin/schemathesis" --config-file scripts/schemathesis/schemathesis.toml \
        run "$base/openapi.json" --max-examples "$1" --workers 2 --seed 1 "${@:2}"
}

start
run "$EXAMPLES"
stop
start --api-key schemathesis-key
run $((EXAMPLES / 3 + 1)) -H "Authorization: Bearer schemathesis-key"
stop
echo "schemathesis: no findings"

#!/usr/bin/env python3
"""The server on a device, end to end (bench/gpu/run.sh): starts `self-judge serve
--port 0` on the given model/config/device, then calls /judge (one pair, then 16 at once
so the engine batches them), /tournament (given candidates, and best-of-n from a query),
/generate and /metrics, and prints one JSON line per call with its status and a short
summary, then a closing `N passed, M failed` line (exit 1 on any failure). On a GPU this
is the path the CLI checks do not take: requests on HTTP threads, the model on the
engine's own thread (candle gives each thread its own CUDA stream).

    python3 bench/gpu/serve_check.py EXE --model DIR --config YAML [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(base: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    req = urllib.request.Request(base + path, method="POST" if body is not None else "GET")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=120) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    server = subprocess.Popen(
        [a.exe, "serve", "--port", "0", "--device", a.device, "--model", a.model,
         "--config", a.config],
        stdout=subprocess.PIPE, text=True)
    passed = failed = 0

    def report(name: str, ok: bool, **info) -> None:
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(json.dumps({"check": f"serve_{name}", "device": a.device, "pass": ok, **info}))
        sys.stdout.flush()

    def checks() -> None:
        line = server.stdout.readline()
        base = line.strip().rsplit(" ", 1)[-1]
        if not base.startswith("http"):
            report("start", False, output=line)
            return
        # It binds first and loads the model after: wait for /health, or for its exit.
        for _ in range(600):
            if server.poll() is not None:
                report("start", False, exit_code=server.returncode)
                return
            try:
                if call(base, "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        pair = {"context": "What is 2 + 3?", "response_a": "5", "response_b": "6"}
        t = time.perf_counter()
        status, r = call(base, "/judge", pair)
        ok = status == 200 and isinstance(r, dict) and r.get("winner") in ("a", "b")
        report("judge", ok, status=status, seconds=round(time.perf_counter() - t, 3),
               response=r if not ok else {"winner": r["winner"]})
        pairs = [{"context": f"What is {i} + {i}?", "response_a": str(2 * i),
                  "response_b": str(2 * i + 1)} for i in range(16)]
        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda p: call(base, "/judge", p), pairs))
        bad = [r for r in results if r[0] != 200]
        report("judge_concurrent", not bad, requests=len(pairs), failures=bad[:2],
               seconds=round(time.perf_counter() - t, 3))
        status, r = call(base, "/tournament", {
            "contexts": ["Say hello."], "responses": [["Hello!", "Hi.", "Go away.", "Hey"]],
            "seed": 1, "return_bracket": True})
        ok = status == 200 and isinstance(r, dict) and 0 <= r["winners"][0]["index"] < 4
        report("tournament", ok, status=status, response=r if not ok else None)
        status, r = call(base, "/generate", {"prompt": "Hello", "max_new_tokens": 8,
                                             "temperature": 0})
        ok = status == 200 and isinstance(r, dict) and len(r.get("generations", [])) == 1
        report("generate", ok, status=status, response=r)
        status, r = call(base, "/tournament", {"query": "Say hello.", "n": 4,
                                               "max_new_tokens": 8, "seed": 3})
        ok = status == 200 and isinstance(r, dict) and len(r.get("winners", [])) == 1
        report("best_of_n", ok, status=status, response=r if not ok else None)
        status, r = call(base, "/metrics")
        ok = status == 200 and "self_judge_batch_size_count" in str(r)
        report("metrics", ok, status=status)

    try:
        checks()
    finally:
        server.kill()
        server.wait()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Self-rejection on a checkable task: one sample vs the self-judged winner of N.

Serves a model with `self-judge serve` on a local port and asks it K held-out two-digit
additions ("What is a + b?", none of them in the judge's training pairs) through the
best-of-n form of /tournament: N sampled answers, and the same model picks one. An
answer is correct when its last number, other than the two operands, is the sum
(SmolLM2 tends to explain first: give it --max-new-tokens to finish). Prints, with the sample sizes:
  one-sample accuracy  mean over all K*N samples (the policy alone)
  tournament accuracy  share of the K winners that are correct (self-rejection)
  oracle best-of-N     share of questions with at least one correct sample

Usage: scripts/eval_best_of_n.py [--adapter adapters/smollm2-judge] [--k 60] [--n 8] [--max-new-tokens 96]
       [--model PATH] [--config YAML] [--port 8093] [--json OUT]
"""

import argparse
import json
import re
import sys
from pathlib import Path

from local_server import post, serving

ROOT = Path(__file__).resolve().parent.parent


def correct(text, a, b):
    nums = [int(x) for x in re.findall(r"-?\d+", text.replace(",", ""))]
    rest = [x for x in nums if x not in (a, b)]
    return bool(rest) and rest[-1] == a + b


def questions(k, seed, train_file):
    seen = set()
    if train_file.exists():
        for line in train_file.read_text().splitlines():
            m = re.search(r"What is (\d+) \+ (\d+)\?", line)
            if m:
                seen.add((int(m[1]), int(m[2])))
    import random
    rng, out = random.Random(seed), []
    while len(out) < k:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--config", default="configs/smollm2_judge.yaml")
    ap.add_argument("--adapter", default="adapters/smollm2-judge")
    ap.add_argument("--k", type=int, default=60)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--port", type=int, default=8093)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--binary", default=ROOT / "target" / "release" / "self-judge", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with serving(args.binary, args.model, args.config, args.port, args.adapter):
        qs = questions(args.k, args.seed, ROOT / "data/judge/train/arithmetic.jsonl")
        samples_ok = winners_ok = any_ok = 0
        rows = []
        for i, (a, b) in enumerate(qs):
            q = f"What is {a} + {b}?"
            # The server's best-of-n form: N samples, then the knockout over them.
            t = post(args.port, "/tournament", {
                "query": q, "n": args.n, "max_new_tokens": args.max_new_tokens,
                "temperature": args.temperature, "seed": args.seed + i})
            cands = [c["text"] for c in t["candidates"]]
            oks = [correct(c, a, b) for c in cands]
            w = t["winners"][0]["index"]
            samples_ok += sum(oks)
            winners_ok += oks[w]
            any_ok += any(oks)
            rows.append({"question": q, "candidates": cands, "correct": oks, "winner": w})
            print(f"{i + 1}/{len(qs)} {q} winner ok={oks[w]} samples ok={sum(oks)}/{len(oks)}",
                  file=sys.stderr)
    k, n = len(qs), args.n
    result = {"k": k, "n": n, "temperature": args.temperature, "adapter": args.adapter,
              "one_sample_accuracy": samples_ok / (k * n),
              "tournament_accuracy": winners_ok / k, "oracle_best_of_n": any_ok / k}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Judge accuracy and order-consistency on held-out pairs, with and without an adapter.

Runs `self-judge judge` once per model over every held-out split written by
scripts/data/build_judge_data.py (data/judge/heldout/*.jsonl), BIG-bench hhh_alignment
(data/judge/eval/hhh.jsonl, evaluation only) and the hand-written obvious pairs
(scripts/data/obvious_pairs.jsonl), then prints one table:
  n           pairs in the split
  acc         share of verdicts that pick the better response (after both orders)
  consistent  share of verdicts where both orders prefer the same response

Usage:
  scripts/eval_judge.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
      [--config configs/smollm2_judge.yaml] [--adapter adapters/smollm2-judge]
      [--runs zero-shot,jsft] [--json OUT.json]
`zero-shot` is the base model with the same config and no adapter; `jsft` adds the
adapter.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_sets(data: Path):
    rows = []
    for f in sorted((data / "heldout").glob("*.jsonl")):
        rows += [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    hhh = data / "eval" / "hhh.jsonl"
    if hhh.exists():
        for l in hhh.read_text().splitlines():
            r = json.loads(l)
            r["source"] = "hhh_alignment"
            rows.append(r)
    obvious = ROOT / "scripts" / "data" / "obvious_pairs.jsonl"
    rows += [json.loads(l) for l in obvious.read_text().splitlines() if l.strip()]
    return rows


def judge(binary: Path, model: str, config: str, adapter: str | None, rows):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        inp.write_text("".join(json.dumps({k: r[k] for k in ("context", "response_a", "response_b")})
                               + "\n" for r in rows))
        cmd = [str(binary), "judge", "--model", model, "--config", config,
               "--input", str(inp), "--output", str(out)]
        if adapter:
            cmd += ["--adapter", adapter]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return [json.loads(l) for l in out.read_text().splitlines()]


def score(rows, verdicts):
    by = defaultdict(lambda: [0, 0, 0])
    for r, v in zip(rows, verdicts, strict=True):
        for key in (r["source"], "all held-out constructed" if r["source"] not in
                    ("hhh_alignment", "obvious", "llamafactory_dpo") else None):
            if key is None:
                continue
            s = by[key]
            s[0] += 1
            s[1] += v["winner"] == r["better"]
            s[2] += bool(v["consistent"])
    return {k: {"n": n, "acc": ok / n, "consistent": c / n} for k, (n, ok, c) in by.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--config", default="configs/smollm2_judge.yaml")
    ap.add_argument("--adapter", default="adapters/smollm2-judge")
    ap.add_argument("--data", default="data/judge", type=Path)
    ap.add_argument("--binary", default=ROOT / "target" / "release" / "self-judge", type=Path)
    ap.add_argument("--runs", default="zero-shot,jsft")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.data / "heldout").is_dir():
        sys.exit(f"error: {args.data}/heldout missing: run scripts/data/build_judge_data.py")
    rows = load_sets(args.data)
    results = {}
    known = {"zero-shot": None, "jsft": args.adapter}
    for name in args.runs.split(","):
        if name not in known:
            sys.exit(f"error: unknown run {name!r} (known: {', '.join(known)})")
        adapter = known[name]
        print(f"judging {len(rows)} pairs with {name} ...", file=sys.stderr)
        results[name] = score(rows, judge(args.binary, args.model, args.config, adapter, rows))
    keys = sorted(next(iter(results.values())), key=lambda k: (k.startswith("all"), k))
    head = "| split | n | " + " | ".join(f"{r} acc | {r} consistent" for r in results) + " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(results)))
    for k in keys:
        n = next(iter(results.values()))[k]["n"]
        cells = " | ".join(f"{results[r][k]['acc']:.3f} | {results[r][k]['consistent']:.3f}"
                           for r in results)
        print(f"| {k} | {n} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

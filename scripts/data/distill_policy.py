#!/usr/bin/env python3
"""SFT rows that keep the JSFT model a policy: the base model's own answers.

JSFT on judgment examples alone teaches the LoRA to answer every assistant turn with a
verdict letter; served as a policy, the merged model then writes one or two words. The
paper's JSFT trains SFT examples beside the judgments (SPEC §4). Our preference data has
short constructed answers, so the SFT rows here are self-distilled: the questions of the
training splits of scripts/data/build_judge_data.py (never a held-out one), answered by
the base SmolLM2-135M-Instruct served with `self-judge serve`, sampled with a fixed seed
and kept only when the model ended the answer itself. Two-digit additions of the training
split get their correct sum instead, as an SFT policy would learn from chosen answers.

Writes data/judge/policy_sft.jsonl (HH rows, `rejected` = `chosen`: used with `role: sft`).

Usage: scripts/data/distill_policy.py [--per-source 60] [--arithmetic 120] [--port 8094]
"""

import argparse
import json
import random
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from local_server import post, serving  # noqa: E402
TRAIN = ROOT / "data/judge/train"
SOURCES = ["bigbench_mc", "relevance", "categories", "yesno", "llamafactory_dpo", "shuffled"]


def first_question(row):
    """The question of a single-turn row (None for multi-turn rows)."""
    text = row["chosen"]
    if text.count("\n\nHuman:") != 1:
        return None
    h = text.index("\n\nHuman:") + len("\n\nHuman:")
    a = text.find("\n\nAssistant:", h)
    return text[h:a].strip() if a > 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--per-source", type=int, default=60)
    ap.add_argument("--arithmetic", type=int, default=120)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--port", type=int, default=8094)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--binary", default=ROOT / "target/release/self-judge", type=Path)
    ap.add_argument("--out", default=ROOT / "data/judge/policy_sft.jsonl", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    prompts, seen = [], set()
    for src in SOURCES:
        qs = []
        for line in (TRAIN / f"{src}.jsonl").read_text().splitlines():
            q = first_question(json.loads(line))
            if q and q not in seen and len(q) < 1200:
                seen.add(q)
                qs.append(q)
        rng.shuffle(qs)
        prompts += [(src, q) for q in qs[:args.per_source]]
    sums = []
    for line in (TRAIN / "arithmetic.jsonl").read_text().splitlines():
        m = re.search(r"What is (\d+) \+ (\d+)\?", line)
        if m and (int(m[1]), int(m[2])) not in sums:
            sums.append((int(m[1]), int(m[2])))
    rng.shuffle(sums)
    rows, ended = [], 0
    with serving(args.binary, ROOT / args.model, ROOT / "configs/smollm2_hh_judge.yaml", args.port):
        def answer(item):
            i, (src, q) = item
            body = {"messages": [{"role": "user", "content": q}], "temperature": 0.7, "top_p": 0.9,
                    "max_new_tokens": args.max_new_tokens, "seed": args.seed * 100_003 + i}
            return src, q, post(args.port, "/generate", body)["generations"][0]

        # Concurrent requests so the server batches them into shared forward passes.
        with ThreadPoolExecutor(8) as pool:
            for k, (src, q, g) in enumerate(pool.map(answer, enumerate(prompts))):
                if (k + 1) % 50 == 0:
                    print(f"{k + 1}/{len(prompts)}", file=sys.stderr)
                text = g["text"].strip()
                if g["finish_reason"] == "length" or not text or re.search(r"Human:|Assistant:", text):
                    continue
                ended += 1
                t = f"\n\nHuman: {q}\n\nAssistant: {text}"
                rows.append({"source": f"distilled_{src}", "chosen": t, "rejected": t})
    for a, b in sums[:args.arithmetic]:
        t = f"\n\nHuman: What is {a} + {b}?\n\nAssistant: {a} + {b} = {a + b}."
        rows.append({"source": "arithmetic_sum", "chosen": t, "rejected": t})
    rng.shuffle(rows)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(prompts)} questions, {ended} answers ended by the model, "
          f"{min(len(sums), args.arithmetic)} sums -> {len(rows)} rows in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

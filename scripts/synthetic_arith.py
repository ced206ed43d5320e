"""Synthetic checkable preference task for JSFT tests: "What is a + b?" with the correct
sum as the chosen answer and a wrong sum as the rejected one (HH-RLHF format), plus
held-out judge pairs whose wrong answers never appear in training, in both positions.
Pure Python, deterministic: python3 scripts/synthetic_arith.py OUT_DIR"""
import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/synthetic")
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(7)
train, heldout = [], []
for a in range(10):
    for b in range(10):
        s = a + b
        wrong = [w for w in range(0, 19) if w != s]
        rng.shuffle(wrong)
        q = f"What is {a} + {b}?"
        for w in wrong[:4]:
            train.append({"chosen": f"\n\nHuman: {q}\n\nAssistant: {s}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {w}"})
        w = wrong[4]
        good_first = rng.random() < 0.5
        heldout.append({
            "context": f"User: {q}",
            "response_a": str(s) if good_first else str(w),
            "response_b": str(w) if good_first else str(s),
            "correct": "a" if good_first else "b",
        })
rng.shuffle(train)
(out / "arith_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
(out / "arith_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
print(len(train), "training rows,", len(heldout), "held-out pairs in", out)

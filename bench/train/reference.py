#!/usr/bin/env python3
"""Helpers of bench/train/run.sh (see there).

    reference.py convert --gguf FILE --out DIR
        Loads a GGUF checkpoint with transformers (dequantized) and saves it as an f32
        HF checkpoint with its tokenizer, so both sides train the same weights.
    reference.py data OUT.jsonl [--rows N] [--seed S] [--scale K]
        HH-format rows ({"chosen", "rejected"}) long enough that every JSFT example
        (SFT and both judgment orders) is cut to max_length 256 from the left (K times
        the characters of the tiny character-level tokenizer's rows, for BPE).
    reference.py train --model DIR --batches batches.json --warmup W --steps N [--lr LR]
                       [--mode lora-qv|lora-all|full] [--checkpointing]
        transformers training of the checkpoint DIR on the batches `training jsft` draws
        (dumped by `cargo run --release -p training --example jsft_batches`): f32, sdpa,
        torch AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), constant lr, gradient
        clipping at 1.0, no padding (all sequences have the same length); LoRA modes
        through PEFT (r 8, alpha 16, dropout 0.1). Prints one JSON line: tokens/s over
        the N steps after W warm-up steps, peak RSS, losses.
    reference.py summary MODE_DIR --batches batches.json --warmup W --steps N --rounds R
        Reads one mode's folder of run.sh and prints tokens/s of both sides (each side's
        best round), their ratio, peak RSS and both loss curves.
"""
import argparse
import json
import random
import re
import resource
import sys
import time
from pathlib import Path

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come "
    "did number sound no most people my over know water than call first who may down side"
).split()


def sentence(rng, n_chars, end="."):
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(rng.choice(WORDS))
    return " ".join(out).capitalize() + end


def convert(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(args.gguf)
    kw = dict(gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kw)
    # save_pretrained refuses a model loaded from GGUF: write the weights and config.
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["torch_dtype"] = config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    AutoTokenizer.from_pretrained(str(gguf.parent), **kw).save_pretrained(args.out)


def data(args):
    rng = random.Random(args.seed)
    k = args.scale
    with open(args.out, "w") as f:
        for _ in range(args.rows):
            human = sentence(rng, 220 * k, "?")
            chosen = sentence(rng, 120 * k)
            rejected = sentence(rng, 120 * k)
            pre = f"\n\nHuman: {human}\n\nAssistant:"
            f.write(json.dumps({"chosen": f"{pre} {chosen}", "rejected": f"{pre} {rejected}"}) + "\n")


def train(args):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = json.load(open(args.batches))
    examples, batches = d["examples"], d["batches"]
    assert len(batches) >= args.warmup + args.steps, "dump more steps"
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="sdpa"
    )
    if args.mode != "full":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj"] if args.mode == "lora-qv" else "all-linear"
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if args.mode != "full":
            model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def tensors(batch):
        ids = [examples[i]["input_ids"] for i in batch]
        labels = [examples[i]["labels"] for i in batch]
        assert len({len(x) for x in ids}) == 1, "sequences of one length only (no padding)"
        return torch.tensor(ids), torch.tensor(labels), sum(map(len, ids))

    losses, tokens, t0 = [], 0, None
    for step, batch in enumerate(batches[: args.warmup + args.steps]):
        if step == args.warmup:
            t0, c0 = time.perf_counter(), time.process_time()
            tokens = 0
        ids, labels, n = tensors(batch)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += n
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "tokens_per_s": tokens / elapsed,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "tokens": tokens,
        "steps": args.steps,
        "peak_rss_mib": rss_kib / 1024,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "mode": args.mode + ("+ckpt" if args.checkpointing else ""),
        "trainable": sum(p.numel() for p in params),
        "torch": torch.__version__,
    }))


def rss_mib(f):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", Path(f).read_text())
    return int(m.group(1)) / 1024 if m else None


def summary(args):
    work, warmup, steps = Path(args.work), args.warmup, args.steps
    b = json.load(open(args.batches))
    lens = [sum(len(b["examples"][i]["input_ids"]) for i in batch) for batch in b["batches"]]
    tokens = sum(lens[warmup:warmup + steps])

    def elapsed(log, step):
        # The trainer's log line of a step: "step k/N | ... | elapsed H:MM:SS ...".
        for line in Path(log).read_text().splitlines():
            m = re.match(rf"step {step}/\d+ .*elapsed (\d+):(\d+):(\d+)", line)
            if m:
                h, mi, se = map(int, m.groups())
                return h * 3600 + mi * 60 + se
        raise SystemExit(f"{log}: no log line for step {step}")

    ours, refs = [], []
    for r in range(1, args.rounds + 1):
        d = work / f"round{r}"
        seconds = elapsed(d / "ours.log", warmup + steps) - elapsed(d / "ours.log", warmup)
        state = json.load(open(d / "ours" / "trainer_state.json"))
        ours.append((tokens / seconds, rss_mib(d / "ours.time"), state))
        ref = json.loads((d / "reference.json").read_text().strip().splitlines()[-1])
        refs.append((ref["tokens_per_s"], rss_mib(d / "reference.time") or ref["peak_rss_mib"], ref))
        print(f"round {r}: ours {ours[-1][0]:.1f} tokens/s, reference {refs[-1][0]:.1f} tokens/s, "
              f"ratio {ours[-1][0] / refs[-1][0]:.2f}; reference CPU s/step {ref['cpu_seconds'] / steps:.2f}")
    o, ref = max(ours, key=lambda x: x[0]), max(refs, key=lambda x: x[0])
    o_rss = max((x[1] for x in ours if x[1]), default=float("nan"))
    lengths = sorted({len(e["input_ids"]) for e in b["examples"]})
    print(f"mode {ref[2]['mode']}: {ref[2]['trainable']} trainable parameters (reference); "
          f"sequences per step: {len(b['batches'][0])} x {lengths} tokens")
    print(f"timed: {steps} steps ({tokens} tokens) after {warmup} warm-up steps, "
          f"{ref[2]['threads']} threads; best of {args.rounds} rounds")
    print(f"ours      {o[0]:9.1f} tokens/s  ({tokens / o[0] / steps:.3f} s/step)  peak RSS {o_rss:.0f} MiB")
    print(f"reference {ref[0]:9.1f} tokens/s  ({tokens / ref[0] / steps:.3f} s/step)  "
          f"peak RSS {max(x[1] for x in refs):.0f} MiB  (torch {ref[2]['torch']})")
    print(f"ratio ours/reference: {o[0] / ref[0]:.2f}")
    print("loss ours:      " + " ".join(f"{x['loss']:.4f}" for x in o[2]["log_history"]))
    print("loss reference: " + " ".join(f"{x:.4f}" for x in ref[2]["losses"]))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("convert")
    a.add_argument("--gguf", required=True)
    a.add_argument("--out", required=True)
    a = sub.add_parser("data")
    a.add_argument("out")
    a.add_argument("--scale", type=int, default=1)
    a.add_argument("--rows", type=int, default=200)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("train")
    a.add_argument("--model", required=True)
    a.add_argument("--batches", required=True)
    a.add_argument("--warmup", type=int, default=2)
    a.add_argument("--steps", type=int, default=10)
    a.add_argument("--lr", type=float, default=1e-4)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--mode", choices=["lora-qv", "lora-all", "full"], default="full")
    a.add_argument("--checkpointing", action="store_true")
    a = sub.add_parser("summary")
    a.add_argument("work")
    a.add_argument("--batches", required=True)
    a.add_argument("--warmup", type=int, required=True)
    a.add_argument("--steps", type=int, required=True)
    a.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    {"convert": convert, "data": data, "train": train, "summary": summary}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

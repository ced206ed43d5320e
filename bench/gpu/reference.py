#!/usr/bin/env python3
"""GPU reference for bench_gpu: the seed's judge algorithm in transformers on the same
random-weight model shapes and the same token workload.

What runs is `Judge.run_batch` of bench/reference/seed_judge.py with token ids instead
of text (the benchmark has no tokenizer; its prompts are random token ids): prompts go
judge_batch_size (8) at a time, left padded, through
model.generate(max_new_tokens=1, do_sample=False, output_scores=True,
return_dict_in_generate=True); p_A / p_B = softmax in float32 over the whole vocabulary
of scores[0] at the two token ids, moved to the host. The model is LlamaForCausalLM built
from a LlamaConfig with transformers' random init, directly on the GPU in bfloat16,
attn_implementation="sdpa".

Shapes (as bench/gpu.rs): 0.5b = hidden 896, 24 layers, 14/2 heads, MLP 4864;
1.5b = hidden 1536, 28 layers, 12/2 heads, MLP 8960; vocab 151936, tied embeddings.
Workload: --prompts random prompts of --seq-len tokens (seed 1).

Prints one JSON line per model (mode "generate", the seed's algorithm) and, with
--forward, one more per model with a plain forward per batch (logits_to_keep=1), which
shows what generate() itself costs. Timed after one warm-up batch, with
torch.cuda.synchronize() around the timed loop.

    python3 bench/gpu/reference.py [--models 0.5b,1.5b] [--prompts 128] [--seq-len 512] [--forward]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
}
# tiny's body with Qwen's vocabulary (bench/random_model.rs), for judge-workload smoke runs.
SHAPES["tiny-qwen"] = SHAPES["tiny"]
ID_A, ID_B, PAD = 1, 2, 0


def build(name: str, device: str) -> LlamaForCausalLM:
    vocab = 320 if name == "tiny" else 151936
    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r} ({', '.join(SHAPES)})")
    cfg = LlamaConfig(vocab_size=vocab, rms_norm_eps=1e-6, rope_theta=1e6,
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      attn_implementation="sdpa", **SHAPES[name])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.config._attn_implementation = "sdpa"
    return model.eval()


def left_pad(batch: list[list[int]], device: str) -> dict:
    width = max(len(p) for p in batch)
    ids = [[PAD] * (width - len(p)) + p for p in batch]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in batch]
    return {"input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device)}


@torch.inference_mode()
def run_batch(model, batch, device: str, mode: str) -> list[tuple[float, float]]:
    enc = left_pad(batch, device)
    if mode == "generate":
        out = model.generate(**enc, max_new_tokens=1, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=PAD)
        scores = out.scores[0]
    else:
        scores = model(**enc, logits_to_keep=1).logits[:, -1]
    probs = torch.softmax(scores.float(), dim=-1)
    ab = probs[:, [ID_A, ID_B]].cpu().tolist()
    return [(a, b) for a, b in ab]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="0.5b,1.5b")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8, help="the seed's judge_batch_size")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--forward", action="store_true")
    args = ap.parse_args()

    if args.device.startswith("cuda"):
        # The card's bf16 matmul peak as torch reaches it (the MFU denominator), timed
        # for about a second after a warm-up long enough for the clocks to rise.
        n = 8192
        a = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            a @ b
            torch.cuda.synchronize()
        iters, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
            iters += 10
        tf = 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12
        print(json.dumps({"kind": "gemm_torch", "n": n, "tflops": round(tf, 1)}), flush=True)
        del a, b

    gen = torch.Generator().manual_seed(1)
    for name in args.models.split(","):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = build(name, args.device)
        build_s = time.perf_counter() - t0
        vocab = model.config.vocab_size
        prompts = torch.randint(0, vocab, (args.prompts, args.seq_len), generator=gen).tolist()
        n_params = sum(p.numel() for p in model.parameters())
        for mode in ["generate"] + (["forward"] if args.forward else []):
            run_batch(model, prompts[: args.batch_size], args.device, mode)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            probs = []
            for i in range(0, len(prompts), args.batch_size):
                probs += run_batch(model, prompts[i : i + args.batch_size], args.device, mode)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            tokens = len(prompts) * args.seq_len
            print(json.dumps({
                "kind": "reference", "mode": mode, "model": name, "params": n_params,
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "attn": model.config._attn_implementation, "batch_size": args.batch_size,
                "prompts": len(prompts), "seq_len": args.seq_len, "build_s": round(build_s, 3),
                "seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1),
                "pairs_per_s": round(len(prompts) / 2 / seconds, 3),
                "finite": all(a == a and b == b for a, b in probs),
                "torch": torch.__version__, "transformers": transformers.__version__,
            }), flush=True)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How far transformers' own bf16 forward lands from its f32 forward on the parity fixtures.

The yardstick for bench/gpu_parity.rs's `logits` check: the same prompt lengths (1, 5, 17,
40, 64, 64, 64, 100 random tokens), last-position logits, for ten seeds, both error
measures that gpu_parity reports: `rel_err` = max |bf16 - f32| / max |f32| and `rel_l2` =
‖bf16 - f32‖₂ / ‖f32‖₂. Runs on the CPU (torch's bf16 matmuls accumulate in f32 there, as
cuBLAS does). Needs torch and transformers:

    python3 bench/reference/bf16_noise.py [tests/fixtures/parity/tiny-qwen2 ...]

Seen with torch 2.15 / transformers 5.24 on the CPU: rel_err up to 0.0089 (tiny-llama),
0.0119 (tiny-qwen2), 0.0098 (tiny-mistral); rel_l2 0.0065-0.0089 on all three.
"""
import json
import sys

import torch
import transformers

LENGTHS = [1, 5, 17, 40, 64, 64, 64, 100]


def main() -> None:
    paths = sys.argv[1:] or [
        f"tests/fixtures/parity/tiny-{m}" for m in ("llama", "qwen2", "mistral")
    ]
    for path in paths:
        load = transformers.AutoModelForCausalLM.from_pretrained
        f32 = load(path, dtype=torch.float32).eval()
        bf16 = load(path, dtype=torch.bfloat16).eval()
        vocab = f32.config.vocab_size
        rel_err, rel_l2 = [], []
        for seed in range(10):
            gen = torch.Generator().manual_seed(seed)
            want, got = [], []
            for n in LENGTHS:
                ids = torch.randint(0, vocab, (1, n), generator=gen)
                with torch.no_grad():
                    want.append(f32(ids).logits[0, -1].float())
                    got.append(bf16(ids).logits[0, -1].float())
            w, g = torch.stack(want), torch.stack(got)
            rel_err.append(((g - w).abs().max() / w.abs().max()).item())
            rel_l2.append(((g - w).norm() / w.norm()).item())
        print(json.dumps({"model": path, "rel_err": [round(e, 5) for e in rel_err],
                          "rel_l2": [round(e, 5) for e in rel_l2],
                          "max_rel_err": round(max(rel_err), 5), "max_rel_l2": round(max(rel_l2), 5),
                          "torch": torch.__version__, "transformers": transformers.__version__}),
              flush=True)


if __name__ == "__main__":
    main()

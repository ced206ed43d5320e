#!/usr/bin/env python3
"""Generate tiny random HF checkpoints + reference logits for Rust parity tests.

Run from the repo root with the project venv:

    .venv/bin/python scripts/parity/make_fixtures.py [--out tests/fixtures/parity]

For each model a folder is written with config.json, safetensors weights (in the
dtype under test) and reference.json. Reference logits are computed in float32
from the *saved* checkpoint (reloaded with dtype=float32), so any bf16/f16
rounding of the stored weights is already baked into the expected values.
Everything is seeded: re-running produces byte-identical output on the same
torch/transformers versions (modulo float nondeterminism across CPUs, which is
far below any sensible test tolerance).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "parity"

PROMPT_LENGTHS = [1, 5, 17, 40]
ALL_LOGITS_LEN = 17
WEIGHT_STD = 0.05

COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
    max_position_embeddings=256,
    hidden_act="silu",
    initializer_range=WEIGHT_STD,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def specs():
    return [
        dict(
            name="tiny-llama",
            seed=1001,
            cls=LlamaForCausalLM,
            config=LlamaConfig(
                **COMMON,
                tie_word_embeddings=True,
                rms_norm_eps=1e-5,
                attention_bias=False,
                mlp_bias=False,
                rope_parameters={
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                },
            ),
            dtype="float32",
            max_shard_size=None,
        ),
        dict(
            name="tiny-mistral",
            seed=1002,
            cls=MistralForCausalLM,
            config=MistralConfig(
                **COMMON,
                tie_word_embeddings=False,
                rms_norm_eps=1e-6,
                sliding_window=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            ),
            dtype="bfloat16",
            max_shard_size=None,
        ),
        dict(
            name="tiny-qwen2",
            seed=1003,
            cls=Qwen2ForCausalLM,
            config=Qwen2Config(
                **COMMON,
                tie_word_embeddings=False,
                rms_norm_eps=1e-6,
                use_sliding_window=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
            dtype="float16",
            # ~235 kB of f16 weights -> 3 shards
            max_shard_size="100KB",
        ),
    ]


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Deterministic init, larger than the HF default so logits are far from uniform.

    - every matrix (incl. embeddings / lm_head): N(0, WEIGHT_STD)
    - RMSNorm weights: 1 + N(0, 0.1)   (non-trivial so a missing norm weight is caught)
    - biases (qwen2 q/k/v): N(0, 0.1)  (non-zero so a missing bias is caught)
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            val = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias"):
            val = 0.1 * torch.randn(p.shape, generator=g)
        else:
            val = WEIGHT_STD * torch.randn(p.shape, generator=g)
        p.copy_(val.to(p.dtype))


def f32_list(t: torch.Tensor):
    """Float32 tensor -> nested lists of the shortest decimal that round-trips to the same f32."""
    arr = t.detach().to(torch.float32).cpu().numpy()
    if arr.ndim == 1:
        return [float(str(np.float32(x))) for x in arr]
    return [f32_list(torch.from_numpy(row)) for row in arr]


def build_one(spec: dict, out_root: Path) -> dict:
    out = out_root / spec["name"]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    torch.manual_seed(spec["seed"])
    cfg = spec["config"]
    model = spec["cls"](cfg).eval()
    init_weights(model, spec["seed"])

    dtype = DTYPES[spec["dtype"]]
    model = model.to(dtype)
    save_kwargs = {"safe_serialization": True}
    if spec["max_shard_size"]:
        save_kwargs["max_shard_size"] = spec["max_shard_size"]
    model.save_pretrained(out, **save_kwargs)
    # generation_config.json is not needed by the Rust side
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    del model

    # Reload the *saved* weights in f32 so storage rounding is part of the reference.
    ref_model = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    g = torch.Generator().manual_seed(spec["seed"] + 7)
    vocab = cfg.vocab_size
    prompts = [
        torch.randint(0, vocab, (n,), generator=g).tolist() for n in PROMPT_LENGTHS
    ]

    last_logits = []
    all_logits_len17 = None
    with torch.no_grad():
        for ids in prompts:
            logits = ref_model(torch.tensor([ids])).logits[0].to(torch.float32)
            assert torch.isfinite(logits).all(), f"{spec['name']}: non-finite logits"
            last_logits.append(f32_list(logits[-1]))
            if len(ids) == ALL_LOGITS_LEN:
                all_logits_len17 = f32_list(logits)

    ref = {
        "model_type": cfg.model_type,
        "weights_dtype": spec["dtype"],
        "seed": spec["seed"],
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "prompts": prompts,
        "last_logits": last_logits,
        "all_logits_len17": all_logits_len17,
    }
    (out / "reference.json").write_text(json.dumps(ref) + "\n")

    spreads = [max(r) - min(r) for r in last_logits]
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir())
    print(
        f"{spec['name']}: files={files} total={size/1024:.1f} KiB "
        f"logit spread per prompt={[round(s, 3) for s in spreads]}"
    )
    assert min(spreads) > 1.0, f"{spec['name']}: logits too flat {spreads}"
    assert size < 1_000_000, f"{spec['name']}: fixture too large ({size} bytes)"
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for spec in specs():
        build_one(spec, args.out)


if __name__ == "__main__":
    main()

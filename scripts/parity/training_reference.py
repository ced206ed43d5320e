"""Independent reference for training steps: transformers + PEFT + torch's AdamW.

A few optimizer steps of the tiny checkpoint tests/fixtures/training/lora-jsft-init,
written without any of our code: JSFT (the causal-LM loss on labelled tokens) with LoRA
r 4 on q_proj/v_proj and with full fine-tuning, and DPO (sigmoid loss, reference = the
model with its adapters off) with LoRA. Batches are random token sequences with a
random prompt part masked (-100), drawn from a fixed seed and written out with the
results, so the Rust side (training/tests/reference_steps.rs) feeds the same batches
to our loss, backward, clipping, schedule and AdamW and compares.

As HF's Trainer does: AdamW(betas 0.9/0.999, eps 1e-8) with weight decay on every
parameter but biases and norms, global-norm clipping at max_grad_norm before the step,
and `get_scheduler` for the learning rate.

    .venv/bin/python scripts/parity/training_reference.py   # rewrites reference-steps/
"""

import json
import os
import random

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Trainer, get_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INIT = os.path.join(ROOT, "tests/fixtures/training/lora-jsft-init")
OUT = os.path.join(ROOT, "tests/fixtures/training/reference-steps")
VOCAB = 266
STEPS = 5
LR = 1e-2
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
BETA = 0.1


def sequence(rng, lo, hi):
    n = rng.randint(lo, hi)
    ids = [rng.randrange(VOCAB) for _ in range(n)]
    prompt = rng.randint(1, n - 2)
    labels = [-100] * prompt + ids[prompt:]
    return {"input_ids": ids, "labels": labels}


def padded(seqs):
    width = max(len(s["input_ids"]) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s["input_ids"])
        ids[i, :n] = torch.tensor(s["input_ids"])
        labels[i, :n] = torch.tensor(s["labels"])
        mask[i, :n] = 1
    return ids, labels, mask


def base_model():
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(INIT, torch_dtype=torch.float32, attn_implementation="eager")
    m.config.use_cache = False
    return m


def lora(model):
    torch.manual_seed(1234)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none")
    return get_peft_model(model, cfg)


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def optimizer(model, named):
    # HF Trainer's own rule for which parameters decay (not biases, not norms).
    decay_names = set(Trainer.get_decay_parameter_names(None, model))
    decay = [p for n, p in named if n in decay_names]
    no_decay = [p for n, p in named if n not in decay_names]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=STEPS)
    return opt, sched


def step(named, opt, sched, loss):
    lr = sched.get_last_lr()[0]
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], MAX_GRAD_NORM)
    opt.step()
    sched.step()
    opt.zero_grad()
    return {"loss": loss.item(), "grad_norm": norm.item(), "lr": lr}


def peft_key(name):
    # PEFT's saved names: no adapter name (`lora_A.default.weight` -> `lora_A.weight`).
    return name.replace(".default", "")


def jsft(model, named, batches):
    opt, sched = optimizer(model, named)
    log = []
    for b in batches:
        ids, labels, mask = padded(b)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        log.append(step(named, opt, sched, loss))
    return log


def seq_logps(model, seqs):
    ids, labels, mask = padded(seqs)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    keep = target != -100
    picked = torch.gather(logits.log_softmax(-1), 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1)


def dpo(model, named, batches):
    opt, sched = optimizer(model, named)
    log = []
    for b in batches:
        chosen, rejected = b["chosen"], b["rejected"]
        with torch.no_grad(), model.disable_adapter():
            ref = seq_logps(model, chosen + rejected)
        pol = seq_logps(model, chosen + rejected)
        n = len(chosen)
        logits = (pol[:n] - pol[n:]) - (ref[:n] - ref[n:])
        loss = -torch.nn.functional.logsigmoid(BETA * logits).mean()
        log.append(step(named, opt, sched, loss))
    return log


def main():
    rng = random.Random(7)
    jsft_batches = [[sequence(rng, 8, 24) for _ in range(4)] for _ in range(STEPS)]
    dpo_batches = [
        {"chosen": [sequence(rng, 8, 20) for _ in range(3)], "rejected": [sequence(rng, 8, 20) for _ in range(3)]}
        for _ in range(STEPS)
    ]
    os.makedirs(OUT, exist_ok=True)
    result = {
        "steps": STEPS, "learning_rate": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
        "lr_scheduler_type": "cosine", "warmup_steps": 1, "beta": BETA,
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "jsft_batches": jsft_batches, "dpo_batches": dpo_batches,
    }
    # LoRA JSFT and LoRA DPO start from the same PEFT initialisation (saved for ours).
    for kind, run, batches in [("jsft_lora", jsft, jsft_batches), ("dpo_lora", dpo, dpo_batches)]:
        model = lora(base_model())
        named = trainable(model)
        init = {peft_key(n): p.detach().clone().contiguous() for n, p in named}
        os.makedirs(os.path.join(OUT, "lora-init"), exist_ok=True)
        save_file(init, os.path.join(OUT, "lora-init", "adapter_model.safetensors"))
        result[kind] = run(model, named, batches)
        save_file({peft_key(n): p.detach().contiguous() for n, p in named}, os.path.join(OUT, f"{kind}.safetensors"))
    model = base_model()
    named = trainable(model)
    result["jsft_full"] = jsft(model, named, jsft_batches)
    save_file({n: p.detach().contiguous() for n, p in named}, os.path.join(OUT, "jsft_full.safetensors"))
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    for k in ["jsft_lora", "dpo_lora", "jsft_full"]:
        print(k, [round(s["loss"], 6) for s in result[k]])


if __name__ == "__main__":
    main()

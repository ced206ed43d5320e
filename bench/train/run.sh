#!/usr/bin/env bash
# Training throughput and memory: `training jsft` vs transformers (+ PEFT for LoRA)
# training the same model on the same batches, alternated in one run.
#
#   python3 -m venv .venv && .venv/bin/pip install -r scripts/parity/requirements.txt
#   bench/train/run.sh                          # SmolLM2-135M, lora-qv lora-all full
#   MODES=lora-qv ROUNDS=2 bench/train/run.sh   # one configuration, two rounds
#   MODEL=tiny MODES=full bench/train/run.sh    # the 2.97M-parameter `training init` model
#
# MODEL=smollm2 (default): SmolLM2-135M-Instruct from the GGUF (scripts/fetch-smollm2.sh),
# dequantized once by transformers and saved as an f32 HF checkpoint that both sides
# load, with its own tokenizer and ChatML template. MODEL=tiny: `training init` Llama
# (hidden 256, 4 layers, 8 heads, 4 KV heads, intermediate 688, tied embeddings, the
# tiny-chat tokenizer). Data: HH rows from `reference.py data`, long enough that every
# JSFT example (SFT and both judgment orders) is cut to max_length 256: each step is 8
# sequences of exactly 256 tokens. The batches are the ones `training jsft` draws,
# dumped by `--example jsft_batches` and replayed by the reference, so both sides train
# on the same tokens with the same labels.
#
# MODES: `lora-qv` (LoRA r 8, alpha 16, dropout 0.1 on q_proj/v_proj, the seed's
# peft_config), `lora-all` (the same on every linear layer), `full` (every weight); a
# `+ckpt` suffix (e.g. `full+ckpt`) turns gradient checkpointing on for both sides.
# Both: AdamW (0.9, 0.999, 1e-8), lr 1e-4 constant, no weight decay, clipping at 1.0,
# f32, THREADS threads (default 2); reference: sdpa attention.
#
# Ours: one `training jsft` run of WARMUP+STEPS steps; the timed steps are the ones after
# the warm-up, from the elapsed time its log prints at each step (1 s resolution; model
# load, data building and saving excluded). The first step of a run is much slower and
# varies from run to run (page faults of a fresh process), so it is never subtracted
# across runs. Peak RSS: /usr/bin/time -v for both processes (reference: getrusage as a
# fallback). ROUNDS (default 1) alternates
# ours and the reference and reports each side's best round, which damps other load on
# a shared machine. Work files in WORK (default target/bench-train).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-smollm2}"
WARMUP="${WARMUP:-1}"
STEPS="${STEPS:-3}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-1}"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="${WORK:-$ROOT/target/bench-train}"
TRAINING="$ROOT/target/release/training"
DUMP="$ROOT/target/release/examples/jsft_batches"

# --workspace, as the tests build: `-p training` alone resolves features differently
# and rebuilds candle.
nice -n 10 cargo build --release -q --workspace --bin training --example jsft_batches
rm -rf "$WORK" && mkdir -p "$WORK"
# ChatML, as the SmolLM2 checkpoint and the tiny-chat tokenizer expect.
CHAT='{% for message in messages %}{{'"'"'<|im_start|>'"'"' + message['"'"'role'"'"'] + '"'"'\n'"'"' + message['"'"'content'"'"'] + '"'"'<|im_end|>'"'"' + '"'"'\n'"'"'}}{% endfor %}{% if add_generation_prompt %}{{ '"'"'<|im_start|>assistant\n'"'"' }}{% endif %}'
case "$MODEL" in
  smollm2)
    MODES="${MODES:-lora-qv lora-all full}"
    GGUF="$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    [ -f "$GGUF" ] || scripts/fetch-smollm2.sh
    "$PY" bench/train/reference.py convert --gguf "$GGUF" --out "$WORK/init"
    "$PY" bench/train/reference.py data "$WORK/data.jsonl" --scale 5
    ;;
  tiny)
    MODES="${MODES:-full}"
    "$PY" bench/train/reference.py data "$WORK/data.jsonl"
    "$TRAINING" init --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 \
      --max-positions 512 --tokenizer tests/fixtures/tiny-chat/tokenizer.json \
      --out "$WORK/init" >&2
    ;;
  *) echo "MODEL must be smollm2 or tiny, got $MODEL" >&2; exit 2 ;;
esac

peft() { # peft MODE: the peft_config section of a mode
  case "${1%+ckpt}" in
    lora-qv) printf 'peft_config:\n  r: 8\n  lora_alpha: 16\n  lora_dropout: 0.1\n  target_modules: [q_proj, v_proj]\n' ;;
    lora-all) printf 'peft_config:\n  r: 8\n  lora_alpha: 16\n  lora_dropout: 0.1\n  target_modules: all-linear\n' ;;
    full) ;;
    *) echo "unknown mode $1 (lora-qv, lora-all, full)" >&2; exit 2 ;;
  esac
}

ckpt() { # ckpt MODE: whether the mode checkpoints
  case "$1" in *+ckpt) echo true ;; *) echo false ;; esac
}

config() { # config STEPS OUT MODE
  cat <<EOF
training_args:
  output_dir: "$2"
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 1
  learning_rate: 1e-4
  lr_scheduler_type: "constant"
  warmup_steps: 0
  max_steps: $1
  gradient_checkpointing: $(ckpt "$3")
  logging_steps: 1
  save_strategy: "no"
  seed: 42
  weight_decay: 0.0
jsft_args:
  max_length: 256
model:
  pretrained_model_name_or_path: "$WORK/init"
$(peft "$3")
templates:
  skip_first_token: False
  chat: "$CHAT"
  user: "<|im_start|>user\n"
  assistant: "<|im_start|>assistant\n"
  judge:
    helpful:
      system: "Judge."
      user: "{context}\nA: {response_a}\nB: {response_b}"
      assistant: "Better:"
dataset: "Anthropic/hh-rlhf"
dataset_path: "$WORK/data.jsonl"
EOF
}
TOTAL=$((WARMUP + STEPS))
config "$TOTAL" "$WORK/unused" full >"$WORK/total.yaml"
"$DUMP" "$WORK/total.yaml" >"$WORK/batches.json"

timed() { # timed LOG CMD...: runs CMD under /usr/bin/time -v when it exists
  if [ -x /usr/bin/time ]; then /usr/bin/time -v -o "$1" "${@:2}"; else "${@:2}"; : >"$1"; fi
}
echo "$MODEL, modes: $MODES; both: $WARMUP warm-up + $STEPS timed steps; $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    R="$WORK/$mode/round$r" && mkdir -p "$R"
    config "$TOTAL" "$R/ours" "$mode" >"$R/total.yaml"
    OMP_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" timed "$R/ours.time" \
      "$TRAINING" jsft --config "$R/total.yaml" 2>"$R/ours.log"
    timed "$R/reference.time" "$PY" bench/train/reference.py train --model "$WORK/init" \
      --batches "$WORK/batches.json" --warmup "$WARMUP" --steps "$STEPS" --threads "$THREADS" \
      --mode "${mode%+ckpt}" $([ "$(ckpt "$mode")" = true ] && echo --checkpointing) \
      >"$R/reference.json" 2>"$R/reference.log"
  done
done
for mode in $MODES; do
  echo "== $MODEL $mode"
  "$PY" bench/train/reference.py summary "$WORK/$mode" --batches "$WORK/batches.json" \
    --warmup "$WARMUP" --steps "$STEPS" --rounds "$ROUNDS"
done

#!/usr/bin/env bash
# Training throughput: `training jsft` (full fine-tuning, f32, CPU) vs transformers
# training the same model on the same batches, measured side by side in one run.
#
#   python3 -m venv .venv && .venv/bin/pip install -r scripts/parity/requirements.txt
#   bench/train/run.sh                               # 2 warm-up + 10 timed steps, 2 rounds
#   WARMUP=2 STEPS=20 ROUNDS=3 bench/train/run.sh    # longer
#
# Model: `training init` Llama, hidden 256, 4 layers, 8 heads, 4 KV heads, intermediate
# 688, tied embeddings, the tiny-chat tokenizer (vocab 266), 2.97M parameters; both
# sides start from this checkpoint. Data: 200 HH rows from `reference.py data`, so long
# that every JSFT example (SFT and both judgment orders) is cut to max_length 256: each
# step is 8 sequences of exactly 256 tokens. The batches are the ones `training jsft`
# draws, dumped by `--example jsft_batches` and replayed by the reference, so both
# losses agree step by step. Both: AdamW lr 1e-4 constant, no weight decay, clipping at
# 1.0, THREADS threads (default 2).
#
# Ours after warm-up: `training jsft` runs for WARMUP and for WARMUP+STEPS steps; its
# trainer_state.json gives tokens/s of the training loop (model load, data building and
# saving excluded), and the difference of the two loop times is the STEPS timed steps.
# Peak RSS: /usr/bin/time -v for both processes (reference: getrusage as a fallback).
# ROUNDS (default 2) alternates ours and the reference and reports each side's best
# round, which damps other load on a shared machine.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
WARMUP="${WARMUP:-2}"
STEPS="${STEPS:-10}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="${WORK:-$ROOT/target/bench-train}"
TRAINING="$ROOT/target/release/training"
DUMP="$ROOT/target/release/examples/jsft_batches"

nice -n 10 cargo build --release -q -p training --bin training --example jsft_batches
rm -rf "$WORK" && mkdir -p "$WORK"
"$PY" bench/train/reference.py data "$WORK/data.jsonl"
"$TRAINING" init --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 688 \
  --max-positions 512 --tokenizer tests/fixtures/tiny-chat/tokenizer.json \
  --out "$WORK/init" >&2

config() { # config STEPS OUT
  cat <<EOF
training_args:
  output_dir: "$2"
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 1
  learning_rate: 1e-4
  lr_scheduler_type: "constant"
  warmup_steps: 0
  max_steps: $1
  logging_steps: 1
  save_strategy: "no"
  seed: 42
  weight_decay: 0.0
jsft_args:
  max_length: 256
model:
  pretrained_model_name_or_path: "$WORK/init"
templates:
  skip_first_token: False
  chat: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
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
config "$TOTAL" "$WORK/unused" >"$WORK/total.yaml"
"$DUMP" "$WORK/total.yaml" >"$WORK/batches.json"

timed() { # timed LOG CMD...: runs CMD under /usr/bin/time -v when it exists
  if [ -x /usr/bin/time ]; then /usr/bin/time -v -o "$1" "${@:2}"; else "${@:2}"; : >"$1"; fi
}
echo "ours: $WARMUP then $TOTAL steps; reference: $WARMUP + $STEPS steps; $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
  R="$WORK/round$r" && mkdir -p "$R"
  config "$WARMUP" "$R/ours-warmup" >"$R/warmup.yaml"
  config "$TOTAL" "$R/ours" >"$R/total.yaml"
  OMP_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" timed "$R/ours-warmup.time" \
    "$TRAINING" jsft --config "$R/warmup.yaml" 2>"$R/ours-warmup.log"
  OMP_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" timed "$R/ours.time" \
    "$TRAINING" jsft --config "$R/total.yaml" 2>"$R/ours.log"
  timed "$R/reference.time" "$PY" bench/train/reference.py train --model "$WORK/init" \
    --batches "$WORK/batches.json" --warmup "$WARMUP" --steps "$STEPS" --threads "$THREADS" \
    >"$R/reference.json" 2>"$R/reference.log"
done
"$PY" bench/train/reference.py summary "$WORK" --warmup "$WARMUP" --steps "$STEPS" --rounds "$ROUNDS"

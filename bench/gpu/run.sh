#!/usr/bin/env bash
# The ONE device run of issue 8 (no Rust, no network there): the GEMM/allocation probe,
# GPU parity checks, the judge-prefill benchmark for the 0.5B and 1.5B shapes, the
# transformers reference and a CLI smoke run, from the prebuilt binaries that
# scripts/build-cuda.sh put in gpu-bin/ (carry it). Writes 8 flat files under $OUT (the
# most a device call returns):
#   env.txt probe.jsonl parity.jsonl bench.jsonl reference.jsonl cli.jsonl (CLI, server)
#   stderr.log (every step's stderr, cuBLAS logs, profiler output) summary.txt
# Usage, from the repository root: OUT=/some/dir bench/gpu/run.sh  (expected 4-5
# minutes; every step has a timeout, and a step that would start after BUDGET seconds
# (default 500) is skipped, so the whole run stays under ~9 minutes: give the device
# call a timeout_s of about 600). STEPS="parity bench judge-*" (glob patterns of step
# names) runs only the steps it names, for a short rerun.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:?set OUT}"
BIN="${GPU_BIN:-gpu-bin}"
mkdir -p "$OUT"
ERR="$OUT/stderr.log"
SUMMARY="$OUT/summary.txt"
: >"$ERR"
: >"$SUMMARY"
T0=$(date +%s)

step() { # NAME TIMEOUT OUTFILE CMD...: runs CMD, records exit code and seconds
    local name=$1 limit=$2 out=$3 pat
    shift 3
    if [ -n "${STEPS:-}" ]; then
        local -
        set -f # the patterns match step names, not files
        for pat in $STEPS; do
            # shellcheck disable=SC2254
            case "$name" in $pat) break ;; esac
            pat=""
        done
        [ -z "$pat" ] && return
    fi
    local t=$(date +%s)
    if [ $((t - T0)) -gt "${BUDGET:-500}" ]; then
        echo "$name skipped (over the time budget)" | tee -a "$SUMMARY"
        return
    fi
    echo "== $name: $*" >>"$ERR"
    timeout --kill-after=10 "$limit" "$@" >>"$out" 2>>"$ERR"
    local rc=$?
    echo "$name rc=$rc seconds=$(($(date +%s) - t))" | tee -a "$SUMMARY"
}

{
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
        --format=csv
} >"$OUT/env.txt" 2>&1

# The binaries, as built or xz-compressed by scripts/build-cuda.sh (unpacked to /tmp;
# python3's lzma when there is no xz).
EXE="$(mktemp -d)"
for name in self-judge bench_gpu gpu_parity gpu_probe bench_judge; do
    if [ -x "$BIN/$name" ]; then
        cp "$BIN/$name" "$EXE/"
    elif [ -e "$BIN/$name.xz" ]; then
        xz -dc "$BIN/$name.xz" >"$EXE/$name" 2>/dev/null ||
            python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
                "$BIN/$name.xz" >"$EXE/$name"
    fi
    chmod +x "$EXE/$name" 2>/dev/null
done
# The flash build's kernels (scripts/build-cuda.sh puts them in a shared library).
if [ -e "$BIN/libflashattention.so.xz" ]; then
    xz -dc "$BIN/libflashattention.so.xz" >"$EXE/libflashattention.so" 2>/dev/null ||
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
            "$BIN/libflashattention.so.xz" >"$EXE/libflashattention.so"
fi

# Libraries the binaries link: libcuda.so.1 (driver), libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13. Look in the CUDA toolkit, the
# system, and the pip wheels next to PyTorch; cudart falls back to the copy in
# gpu-bin/fallback, NVRTC and cuRAND to do-nothing stand-ins there.
PYLIBS=$(timeout 20 python3 - <<'EOF' 2>/dev/null
import glob, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
dirs = []
for r in roots:
    for pat in ("nvidia/*/lib", "nvidia/cu13/lib", "torch/lib"):
        dirs += glob.glob(f"{r}/{pat}")
print(" ".join(dict.fromkeys(dirs)))
EOF
)
CANDIDATES="/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64
    /usr/local/cuda/targets/x86_64-linux/lib
    $(ls -d /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib 2>/dev/null)
    /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib $PYLIBS"
find_lib() { # SONAME -> a directory holding it
    local d
    for d in $CANDIDATES; do
        if [ -e "$d/$1" ]; then
            echo "$d"
            return 0
        fi
    done
    d=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; exit }')
    [ -n "$d" ] && { dirname "$d"; return 0; }
    d=$(timeout 15 find / -xdev -name "$1" -not -path '/proc/*' 2>/dev/null | head -1)
    [ -n "$d" ] && { dirname "$d"; return 0; }
    return 1
}
LDP=""
FALLBACK=""
{
    for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 \
        libnvrtc.so.13; do
        if dir=$(find_lib "$lib"); then
            echo "$lib: $dir"
            case ":$LDP:" in *":$dir:"*) ;; *) LDP="$LDP${LDP:+:}$dir" ;; esac
        elif [ -e "$BIN/fallback/$lib" ]; then
            FALLBACK="$(cd "$BIN/fallback" && pwd)"
            echo "$lib: not found, using the one in $FALLBACK"
        else
            echo "$lib: NOT FOUND"
        fi
    done
    # Last, so that a stand-in never hides a real library found above.
    [ -n "$FALLBACK" ] && LDP="$LDP${LDP:+:}$FALLBACK"
    [ -e "$EXE/libflashattention.so" ] && LDP="$LDP${LDP:+:}$EXE"
    echo "LD_LIBRARY_PATH for our binaries: $LDP"
    LD_LIBRARY_PATH="$LDP" ldd "$EXE/bench_gpu"
    "${PYTHON:-python3}" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
    nproc
    echo "features: $(cat "$BIN/features.txt" 2>/dev/null)"
    echo "profilers: $(command -v ncu nsys 2>/dev/null | tr '\n' ' ')"
} >>"$OUT/env.txt" 2>&1
OURS=(env "LD_LIBRARY_PATH=$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
# SMOKE=1: the same steps on the CPU with tiny sizes, to check this script anywhere.
DEV=cuda
BENCH=(--models 0.5b,1.5b --tokens 4096,8192,16384,32768,65536 --seq-len 512)
REF=(--models 0.5b,1.5b --prompts 128 --seq-len 512)
PARITY=()
JUDGE=(--model tests/fixtures/tiny-chat --config configs/smollm2_hh_judge.yaml)
if [ -e "$BIN/arith-jsft/model.safetensors" ]; then
    PARITY=(--judge-model "$BIN/arith-jsft")
    JUDGE=(--model "$BIN/arith-jsft" --config tests/fixtures/synthetic/arith_jsft.yaml)
fi
JUDGE_SHAPES="0.5b 1.5b"
JUDGE_WORK=(--contexts 16 --candidates 8)
if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu
    JUDGE_SHAPES=tiny-qwen
    JUDGE_WORK=(--contexts 2 --candidates 4)
    PARITY+=(--smollm2 none)
    BENCH=(--tiny --dtype bf16)
    REF=(--models tiny --prompts 16 --seq-len 64 --device cpu)
fi

# Built with --features flash-attn? Then the default attention path is flash, and the
# batched path runs once more for comparison.
FLASH=0
grep -q flash-attn "$BIN/features.txt" 2>/dev/null && FLASH=1

# 0. The host's and cuBLAS's costs (bench/gpu_probe.rs): stream-ordered allocation or
#    not, allocation and per-op costs, candle's matmul against the same cuBLAS call into
#    a buffer made once, a fresh handle, cuBLASLt, a kept memory pool, no event
#    tracking. (The first CUDA process also has the driver compile candle's PTX, ~5 MB,
#    for the card; later ones find it in the driver's cache.)
if [ "$DEV" = cuda ]; then
    step probe 60 "$OUT/probe.jsonl" "${OURS[@]}" "$EXE/gpu_probe" --device "$DEV"
    #    Which algorithm cuBLAS(Lt) logs for candle's product and for cuBLASLt's own call
    #    (log kept short), and, where Nsight Compute is installed (it ran on the lent
    #    H200), the GEMM kernels' names and times (cuBLAS 13 names them nvjet_*).
    LOG=$(mktemp)
    step probe-log 30 /dev/null env CUBLASLT_LOG_LEVEL=4 CUBLASLT_LOG_FILE="$LOG" \
        CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$LOG.blas" "${OURS[@]}" "$EXE/gpu_probe" \
        --device "$DEV" --cases gemm_candle,gemm_lt --n 4096
    {
        echo "== cuBLASLt log (CUBLASLT_LOG_LEVEL=4), first 60 lines"
        head -n 60 "$LOG" 2>/dev/null
        echo "== cuBLAS log, first 30 lines"
        head -n 30 "$LOG.blas" 2>/dev/null
    } >>"$ERR"
    rm -f "$LOG" "$LOG.blas"
    if command -v ncu >/dev/null; then
        step ncu 60 "$ERR" "${OURS[@]}" ncu --clock-control none --launch-count 10 \
            --kernel-name regex:"gemm|xmma|cutlass|nvjet" \
            --metrics gpu__time_duration.sum "$EXE/gpu_probe" --device "$DEV" \
            --cases gemm_candle,gemm_lt --n 4096
    fi
fi
# 1. Correctness: CUDA bf16 against CPU f32, packed vs separate, judge winners, on the
#    default path (flash when built); then the batched path if flash was the default,
#    else without the fused kernels (candle's separate ops, --no-fused). Lines carry
#    "attention" and "fused".
step parity 90 "$OUT/parity.jsonl" "${OURS[@]}" "$EXE/gpu_parity" --device "$DEV" \
    --dtype bf16 "${PARITY[@]}"
if [ "$FLASH" = 1 ]; then
    step parity-batched 45 "$OUT/parity.jsonl" "${OURS[@]}" "$EXE/gpu_parity" \
        --device "$DEV" --dtype bf16 --attention batched "${PARITY[@]}"
else
    step parity-unfused 45 "$OUT/parity.jsonl" "${OURS[@]}" "$EXE/gpu_parity" \
        --device "$DEV" --dtype bf16 --no-fused "${PARITY[@]}"
fi
# 1b. The CLI on the GPU: verdicts of the trained tiny judge (else tiny-chat) on the
#    held-out arithmetic pairs (their extra "correct" field removed: the CLI refuses
#    unknown fields).
PAIRS=$(mktemp)
sed 's/, "correct": "[ab]"//' tests/fixtures/synthetic/arith_heldout.jsonl >"$PAIRS"
step cli 25 "$OUT/cli.jsonl" "${OURS[@]}" "$EXE/self-judge" judge --device "$DEV" \
    "${JUDGE[@]}" --input "$PAIRS" --verbose
rm -f "$PAIRS"
# 1c. The server on the device (bench/gpu/serve_check.py): /judge alone and 16 at once,
#    /tournament with candidates and best-of-n, /generate, /metrics, on tiny-chat.
step serve 60 "$OUT/cli.jsonl" "${OURS[@]}" "${PYTHON:-python3}" bench/gpu/serve_check.py \
    "$EXE/self-judge" --model tests/fixtures/tiny-chat --config configs/smollm2_hh_judge.yaml \
    --device "$DEV"
# 2. Throughput: bf16 GEMM peak, then judge prefill at 4k (= the reference's batch of
#    8 x 512) and 8k..64k tokens for both shapes.
step "bench" 60 "$OUT/bench.jsonl" "${OURS[@]}" "$EXE/bench_gpu" \
    --device "$DEV" "${BENCH[@]}" --iters 3
#    The batched attention path when flash is the default (with the fused kernels),
#    then the previous path as the baseline of this run: batched attention with candle's
#    separate ops instead of the fused kernels.
if [ "$FLASH" = 1 ]; then
    step "bench-batched" 60 "$OUT/bench.jsonl" "${OURS[@]}" "$EXE/bench_gpu" \
        --device "$DEV" "${BENCH[@]}" --iters 3 --attention batched
fi
step "bench-unfused" 60 "$OUT/bench.jsonl" "${OURS[@]}" "$EXE/bench_gpu" \
    --device "$DEV" "${BENCH[@]}" --iters 3 --attention batched --no-fused
#    Where the time goes: one 16k-token forward of each shape under Nsight Compute
#    (bench_gpu --profile brackets it with cuProfilerStart/Stop), GPU time per kernel
#    name, into stderr.log after a "== profile-SHAPE" line. Caches are not flushed
#    between kernels, so small kernels are timed as they run in the forward.
if [ "$DEV" = cuda ] && command -v ncu >/dev/null; then
    for shape in 1.5b 0.5b; do
        step "profile-$shape" 90 "$ERR" "${OURS[@]}" ncu --profile-from-start off \
            --clock-control none --cache-control none --metrics gpu__time_duration.sum \
            --print-summary per-kernel "$EXE/bench_gpu" --device "$DEV" --models "$shape" \
            --tokens 16384 --iters 1 --gemm 1024 --profile
    done
fi
# 3. The seed's algorithm in transformers on the same shapes and prompt length (before
#    the variants, so that the time budget never drops it).
step reference 80 "$OUT/reference.jsonl" "${PYTHON:-python3}" bench/gpu/reference.py \
    "${REF[@]}" --forward
#    The judge workload itself (bench/data/workload.json, configs/smollm2_hh_judge.yaml):
#    a tournament of 8 candidates for each of 16 contexts, random weights of each shape
#    and a real tokenizer (Qwen3's, ChatML template, from gpu-bin/qwen3-tokenizer), ours
#    (shared-prefix KV cache, packed batches) against the seed's algorithm on the same
#    prompts. Unlike random tokens, judge prompts share their template and context.
if [ -e "$BIN/qwen3-tokenizer/tokenizer.json.xz" ]; then
    TOKDIR=$(mktemp -d)
    xz -dc "$BIN/qwen3-tokenizer/tokenizer.json.xz" >"$TOKDIR/tokenizer.json" 2>/dev/null ||
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
            "$BIN/qwen3-tokenizer/tokenizer.json.xz" >"$TOKDIR/tokenizer.json"
    cp "$BIN/qwen3-tokenizer/tokenizer_config.json" "$TOKDIR/"
    for shape in $JUDGE_SHAPES; do
        step "judge-$shape" 60 "$OUT/bench.jsonl" "${OURS[@]}" "$EXE/bench_judge" \
            --device "$DEV" --shape "$shape" --tokenizer "$TOKDIR" \
            --config configs/smollm2_hh_judge.yaml "${JUDGE_WORK[@]}" --max-batch-tokens 32768
        step "judge-reference-$shape" 90 "$OUT/reference.jsonl" "${PYTHON:-python3}" \
            bench/reference/seed_judge.py --config configs/smollm2_hh_judge.yaml \
            --shape "$shape" --tokenizer "$TOKDIR" --device "$DEV" "${JUDGE_WORK[@]}" \
            --threads "$(nproc)"
    done
    rm -rf "$TOKDIR"
fi
# 4. Variant: without cudarc's per-allocation events.
step "bench-no-events" 60 "$OUT/bench.jsonl" "${OURS[@]}" "$EXE/bench_gpu" \
    --device "$DEV" "${BENCH[@]}" --iters 3 --no-event-tracking

{
    echo "total seconds=$(($(date +%s) - T0))"
    grep -h 'gemm' "$OUT/bench.jsonl" "$OUT/reference.jsonl" 2>/dev/null
    grep -h "passed, " "$OUT/parity.jsonl" "$OUT/cli.jsonl" 2>/dev/null
} | tee -a "$SUMMARY"

rm -rf "$EXE"

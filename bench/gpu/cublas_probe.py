"""Why does candle's bf16 GEMM run at ~133 TFLOP/s on an H200 where torch reaches ~658?
Calls cuBLAS directly (ctypes) the way candle 0.11 does — cublasGemmStridedBatchedEx,
bf16 in/out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT_TENSOR_OP, batch 1 — and variants,
on torch-allocated buffers, printing TFLOP/s per variant as JSON lines.
Run on the device: python3 bench/gpu/cublas_probe.py"""
import ctypes
import glob
import json
import time

import torch

paths = sorted(glob.glob("/usr/local/cuda/lib64/libcublas.so.13*"))
lib = ctypes.CDLL(paths[0] if paths else "libcublas.so.13")
c_int, c_ll, c_vp = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p
lib.cublasGemmStridedBatchedEx.argtypes = [
    c_vp, c_int, c_int, c_int, c_int, c_int, c_vp, c_vp, c_int, c_int, c_ll,
    c_vp, c_int, c_int, c_ll, c_vp, c_vp, c_int, c_int, c_ll, c_int, c_int, c_int]
lib.cublasGemmEx.argtypes = [
    c_vp, c_int, c_int, c_int, c_int, c_int, c_vp, c_vp, c_int, c_int,
    c_vp, c_int, c_int, c_vp, c_vp, c_int, c_int, c_int, c_int]
BF16, C32F, C32F_FAST_16BF, C32F_PEDANTIC = 14, 68, 75, 69
TENSOR_OP, DEFAULT = 99, -1

n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)


def timed(fn):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        fn()
        torch.cuda.synchronize()
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        k += 5
    return 2 * n**3 * k / (time.perf_counter() - t0) / 1e12


def handle_on(stream):
    h = c_vp()
    assert lib.cublasCreate_v2(ctypes.byref(h)) == 0
    assert lib.cublasSetStream_v2(h, c_vp(stream)) == 0
    return h


def batched(h, compute, algo):
    def f():
        r = lib.cublasGemmStridedBatchedEx(
            h, 0, 0, n, n, n, ctypes.byref(alpha), c_vp(a.data_ptr()), BF16, n, n * n,
            c_vp(b.data_ptr()), BF16, n, n * n, ctypes.byref(beta), c_vp(c.data_ptr()),
            BF16, n, n * n, 1, compute, algo)
        assert r == 0, r
    return f


def plain(h, compute, algo):
    def f():
        r = lib.cublasGemmEx(
            h, 0, 0, n, n, n, ctypes.byref(alpha), c_vp(a.data_ptr()), BF16, n,
            c_vp(b.data_ptr()), BF16, n, ctypes.byref(beta), c_vp(c.data_ptr()), BF16, n,
            compute, algo)
        assert r == 0, r
    return f


out = {"torch_matmul": timed(lambda: a @ b)}
default_stream = torch.cuda.current_stream().cuda_stream
side = torch.cuda.Stream()
h0 = handle_on(default_stream)
out["batched_32F_tensorop"] = timed(batched(h0, C32F, TENSOR_OP))
out["batched_32F_default"] = timed(batched(h0, C32F, DEFAULT))
out["batched_fast16bf"] = timed(batched(h0, C32F_FAST_16BF, TENSOR_OP))
out["batched_pedantic"] = timed(batched(h0, C32F_PEDANTIC, TENSOR_OP))
out["gemmex_32F"] = timed(plain(h0, C32F, TENSOR_OP))
with torch.cuda.stream(side):
    h1 = handle_on(side.cuda_stream)
    out["batched_32F_side_stream"] = timed(batched(h1, C32F, TENSOR_OP))
# Per-thread default stream (what candle's device may use) = handle value 2.
h2 = handle_on(2)
out["batched_32F_per_thread_stream"] = timed(batched(h2, C32F, TENSOR_OP))
print(json.dumps({k: round(v, 1) for k, v in out.items()}), flush=True)

//! The GPU's GEMM and per-op costs, as candle sees them (issue 8). Written when the
//! benchmark's 8192³ product ran at 133 TFLOP/s through `Tensor::matmul` while the same
//! cuBLAS call from Python reached 672: on the H200 this probe then showed candle's own
//! product at 693 on well-aligned inputs, which pointed at the benchmark's inputs: its
//! random weights were views at odd offsets, 2-byte aligned, and cuBLAS ran slow kernels
//! on them (fixed by `weights::OwnedStorage`). It stays as the check of what the host
//! and cuBLAS cost on a new card:
//!
//! - `context`: how cudarc runs here: stream-ordered allocation (`cuMemAllocAsync`)
//!   supported or the synchronous fallback (every free then waits for the stream),
//!   event tracking, the memory pool's release threshold.
//! - `sync`: microseconds per synchronize of an idle stream (the host's wait latency).
//! - `alloc`: microseconds per allocate + free of a GEMM output (`[n,n]` bf16), as
//!   candle does once per op.
//! - `small_ops`: microseconds per elementwise add, `[4096,896]` and `[8]` (launch +
//!   allocation overhead per op).
//! - `gemm_*` (TFLOP/s, `2n³` per product): `candle` (`a.matmul(&b)`, a fresh output
//!   each time, as bench_gpu), `raw_candle_handle` (the identical
//!   `cublasGemmStridedBatchedEx` call on candle's cuBLAS handle into a buffer allocated
//!   once), `raw_new_handle` (a fresh handle on the same stream), `lt` (cuBLASLt with
//!   a 32 MiB workspace, as cudarc's `CudaBlasLT`), then `candle` again after raising
//!   the pool's release threshold (`candle_pool_kept`) and after turning event tracking
//!   off (`candle_no_events`, then `small_ops_no_events`).
//! - `gemm_gpu_time` (for `candle` and `raw_candle_handle`): the same products timed by
//!   CUDA events on the GPU, so kernel speed is told apart from host-side costs.
//!
//! Prints one JSON line per measurement. Run on the device:
//! `gpu_probe [--device cuda:0] [--n 8192] [--cases context,alloc,...]`; with
//! `CUBLASLT_LOG_LEVEL=2` set, cuBLASLt logs the kernel it picks for each call.

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::cuda_backend::cudarc;
use candle_core::{DType, Device, Storage, Tensor};
use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{result as drv, sys as dsys, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::bf16;
use serde_json::json;

use self_judge::model::parse_device;

const CASES: &str = "context,sync,alloc,small_ops,gemm_candle,gemm_raw_candle_handle,\
gemm_raw_new_handle,gemm_lt,gemm_candle_pool_kept,gemm_candle_no_events";

/// One unbatched `C = op(A) · B` in cuBLASLt's column-major terms: `op(A)` is `m × k`
/// (A stored `k × m` when `transa`), B `k × n`, C `m × n`, with leading dimensions
/// `(lda, ldb, ldc)`; alpha 1, beta 0, no epilogue.
fn gemm_config(
    transa: bool,
    (m, n, k): (usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
) -> MatmulConfig {
    MatmulConfig {
        transa,
        transb: false,
        transc: false,
        m: m as u64,
        n: n as u64,
        k: k as u64,
        alpha: 1.0,
        lda: lda as i64,
        ldb: ldb as i64,
        beta: 0.0,
        ldc: ldc as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    }
}

/// Runs `f` for half a second to raise the clocks, then at least a second in groups
/// of five between synchronizations; returns calls per second.
fn calls_per_s(
    mut f: impl FnMut() -> anyhow::Result<()>,
    sync: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 0.5 {
        f()?;
        sync()?;
    }
    let (t, mut done) = (Instant::now(), 0usize);
    while t.elapsed().as_secs_f64() < 1.0 || done < 10 {
        for _ in 0..5 {
            f()?;
        }
        sync()?;
        done += 5;
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

/// GPU time per call of `f` in milliseconds, from CUDA events around 10 calls queued
/// back to back (after 3 warm-up calls): the kernels' own time, whatever the host's
/// allocation or synchronization costs.
fn gpu_ms_per_call(
    stream: &std::sync::Arc<CudaStream>,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let timing = Some(dsys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(timing)?;
    for _ in 0..10 {
        f()?;
    }
    let end = stream.record_event(timing)?;
    end.synchronize()?;
    Ok(start.elapsed_ms(&end)? as f64 / 10.0)
}

/// A device copy of a contiguous bf16 tensor's buffer (cudarc's `CudaSlice::clone`).
fn slice_of(t: &Tensor) -> anyhow::Result<CudaSlice<bf16>> {
    let (storage, layout) = t.storage_and_layout();
    if layout.start_offset() != 0 || !layout.is_contiguous() {
        bail!("expected a contiguous tensor at offset 0");
    }
    match &*storage {
        Storage::Cuda(s) => Ok(s.as_cuda_slice::<bf16>()?.clone()),
        _ => bail!("not a CUDA tensor"),
    }
}

/// `c = a · b` for row-major `[n,n]` bf16 matrices, exactly as candle 0.11 calls cuBLAS
/// for a contiguous `a.matmul(&b)`: column-major `cᵀ = bᵀ aᵀ`, f32 compute, tensor-op
/// algorithm, batch 1.
fn raw_gemm(
    handle: &CudaBlas,
    stream: &CudaStream,
    n: usize,
    a: &CudaSlice<bf16>,
    b: &CudaSlice<bf16>,
    c: &mut CudaSlice<bf16>,
) -> anyhow::Result<()> {
    let (alpha, beta) = (1f32, 0f32);
    let ni = n as i32;
    let (pa, _ga) = a.device_ptr(stream);
    let (pb, _gb) = b.device_ptr(stream);
    let (pc, _gc) = c.device_ptr_mut(stream);
    unsafe {
        blas::gemm_strided_batched_ex(
            *handle.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_N,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            ni,
            ni,
            ni,
            (&alpha) as *const f32 as *const _,
            pb as *const _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ni,
            (n * n) as i64,
            pa as *const _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ni,
            (n * n) as i64,
            (&beta) as *const f32 as *const _,
            pc as *mut _,
            bsys::cudaDataType_t::CUDA_R_16BF,
            ni,
            (n * n) as i64,
            1,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
        )?;
    }
    Ok(())
}

/// The release threshold (bytes) of the device's current memory pool.
fn pool_threshold(cu_device: dsys::CUdevice) -> anyhow::Result<u64> {
    let mut v = 0u64;
    unsafe {
        let pool = drv::device::get_mem_pool(cu_device)?;
        drv::mem_pool::get_attribute(
            pool,
            dsys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut v) as *mut u64 as *mut _,
        )?;
    }
    Ok(v)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let device = parse_device(&get("--device").unwrap_or_else(|| "cuda:0".into()))?;
    let n: usize = get("--n").map_or(Ok(8192), |s| s.parse())?;
    let cases = get("--cases").unwrap_or_else(|| CASES.into());
    let want = |c: &str| cases.split(',').any(|x| x == c);
    let Device::Cuda(dev) = &device else {
        bail!("gpu_probe needs --device cuda[:N]")
    };
    let stream = dev.cuda_stream();
    let ctx = stream.context().clone();
    let sync = || -> anyhow::Result<()> { Ok(stream.synchronize()?) };
    let flops = 2.0 * (n as f64).powi(3) / 1e12;
    let emit = |v: serde_json::Value| println!("{v}");

    if want("context") {
        emit(
            json!({"kind": "context", "has_async_alloc": ctx.has_async_alloc(),
            "event_tracking": ctx.is_event_tracking(),
            "multi_stream": ctx.is_in_multi_stream_mode(),
            "per_thread_stream": stream.cu_stream() as usize == 2,
            "pool_release_threshold": pool_threshold(ctx.cu_device()).ok()}),
        );
    }
    if want("sync") {
        // Host round trip of a synchronize on an idle stream (how the driver waits).
        let per = calls_per_s(|| Ok(()), &sync)?;
        emit(json!({"kind": "sync", "us_per_idle_synchronize": 1e6 / per}));
    }
    if want("alloc") {
        let bytes = n * n * 2;
        let per = calls_per_s(
            || {
                let s = unsafe { stream.alloc::<u8>(bytes) }?;
                drop(s);
                Ok(())
            },
            &sync,
        )?;
        emit(json!({"kind": "alloc", "bytes": bytes, "us_per_alloc_free": 1e6 / per}));
    }
    let small_ops = |label: &str| -> anyhow::Result<()> {
        for shape in [vec![4096usize, 896], vec![8]] {
            let x = Tensor::ones(shape.as_slice(), DType::BF16, &device)?;
            let per = calls_per_s(|| (&x + &x).map(drop).map_err(Into::into), &sync)?;
            emit(json!({"kind": label, "shape": shape, "us_per_op": 1e6 / per}));
        }
        Ok(())
    };
    if want("small_ops") {
        small_ops("small_ops")?;
    }
    // Inputs without symmetry (a swapped operand or transpose would change the product),
    // values of order 0.1 as in a model.
    let pattern = |phase: f64| -> anyhow::Result<Tensor> {
        Ok(Tensor::arange(0u32, (n * n) as u32, &device)?
            .to_dtype(DType::F32)?
            .affine(0.000_37, phase)?
            .sin()?
            .affine(0.1, 0.0)?
            .to_dtype(DType::BF16)?
            .reshape((n, n))?)
    };
    let (a, b) = (pattern(0.0)?, pattern(1.3)?);
    // candle's own product, the reference for the raw and cuBLASLt outputs.
    let reference: Vec<f32> = a
        .matmul(&b)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let rel_diff = |got: &CudaSlice<bf16>| -> anyhow::Result<f64> {
        let got = stream.clone_dtoh(got)?;
        let (mut diff, mut scale) = (0f64, 0f64);
        for (g, w) in got.iter().zip(&reference) {
            diff = diff.max((g.to_f64() - *w as f64).abs());
            scale = scale.max((*w as f64).abs());
        }
        Ok(diff / scale.max(f64::MIN_POSITIVE))
    };
    let candle_gemm = |name: &str| -> anyhow::Result<()> {
        let per = calls_per_s(|| a.matmul(&b).map(drop).map_err(Into::into), &sync)?;
        emit(json!({"kind": "gemm", "path": name, "n": n, "tflops": per * flops}));
        Ok(())
    };
    if want("gemm_candle") {
        candle_gemm("candle")?;
        let ms = gpu_ms_per_call(&stream, || a.matmul(&b).map(drop).map_err(Into::into))?;
        emit(
            json!({"kind": "gemm_gpu_time", "path": "candle", "n": n, "ms": ms,
            "tflops": flops / (ms / 1e3)}),
        );
    }
    let (sa, sb) = (slice_of(&a)?, slice_of(&b)?);
    let mut c = unsafe { stream.alloc::<bf16>(n * n) }?;
    if want("gemm_raw_candle_handle") {
        let h = dev.cublas_handle();
        let per = calls_per_s(|| raw_gemm(&h, &stream, n, &sa, &sb, &mut c), &sync)?;
        emit(json!({"kind": "gemm", "path": "raw_candle_handle", "n": n, "tflops": per * flops}));
        let ms = gpu_ms_per_call(&stream, || raw_gemm(&h, &stream, n, &sa, &sb, &mut c))?;
        emit(
            json!({"kind": "gemm_gpu_time", "path": "raw_candle_handle", "n": n, "ms": ms,
            "tflops": flops / (ms / 1e3)}),
        );
        // The same call as candle's: the same numbers, exactly.
        emit(json!({"kind": "check", "path": "raw_candle_handle",
            "max_rel_diff_vs_candle": rel_diff(&c)?}));
    }
    if want("gemm_raw_new_handle") {
        let h = CudaBlas::new(stream.clone())?;
        let per = calls_per_s(|| raw_gemm(&h, &stream, n, &sa, &sb, &mut c), &sync)?;
        emit(json!({"kind": "gemm", "path": "raw_new_handle", "n": n, "tflops": per * flops}));
    }
    if want("gemm_lt") {
        let lt = CudaBlasLT::new(stream.clone())?;
        let cfg = gemm_config(false, (n, n, n), (n, n, n));
        let per = calls_per_s(
            || Ok(unsafe { lt.matmul(cfg, &sb, &sa, &mut c, None, None) }?),
            &sync,
        )?;
        emit(json!({"kind": "gemm", "path": "lt", "n": n, "tflops": per * flops}));
        // Another algorithm: equal within bf16 rounding of the output.
        emit(json!({"kind": "check", "path": "lt", "max_rel_diff_vs_candle": rel_diff(&c)?}));
    }
    if want("gemm_candle_pool_kept") {
        // A driver without memory pools refuses this; the product is timed anyway.
        let kept = unsafe {
            drv::device::get_mem_pool(ctx.cu_device()).and_then(|pool| {
                let mut v = u64::MAX;
                drv::mem_pool::set_attribute(
                    pool,
                    dsys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut v) as *mut u64 as *mut _,
                )
            })
        };
        emit(
            json!({"kind": "pool", "set_release_threshold": format!("{kept:?}"),
            "now": pool_threshold(ctx.cu_device()).ok()}),
        );
        candle_gemm("candle_pool_kept")?;
    }
    if want("gemm_candle_no_events") {
        // Only tensors made after this point skip the events, hence fresh inputs.
        unsafe { dev.disable_event_tracking() };
        let a2 = a.copy()?;
        let b2 = b.copy()?;
        let per = calls_per_s(|| a2.matmul(&b2).map(drop).map_err(Into::into), &sync)?;
        emit(json!({"kind": "gemm", "path": "candle_no_events", "n": n, "tflops": per * flops}));
        small_ops("small_ops_no_events")?;
    }
    sync().context("final synchronize")
}

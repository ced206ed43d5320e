//! Dense projections `x · wᵀ` through cuBLASLt on CUDA, bf16/f16, opt-in with
//! `SELF_JUDGE_CUBLASLT=1`. candle's own product goes through
//! `cublasGemmStridedBatchedEx` on a handle without a workspace of its own; on a lent
//! H200 it ran at a fifth of torch's rate (bench/RESULTS.md). This path gives cuBLASLt
//! an explicit 32 MiB workspace per thread and lets its heuristic pick the kernel; it
//! stays off until a device run (bench/gpu/run.sh) shows it matches the CPU's logits
//! and is faster. Inference only: the op has no backward, so any tensor that tracks
//! gradients takes candle's path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

use super::Result;

/// Whether `SELF_JUDGE_CUBLASLT` asks for this path (`1`/`true`), read once.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SELF_JUDGE_CUBLASLT").is_ok_and(|v| v == "1" || v == "true"))
}

/// `xs · wᵀ` through cuBLASLt when the path is enabled and applies (CUDA, bf16/f16,
/// contiguous, no gradient tracking); `None` to let the caller use candle's product.
pub fn linear(xs: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !enabled()
        || !xs.device().is_cuda()
        || !matches!(xs.dtype(), DType::BF16 | DType::F16)
        || xs.dtype() != w.dtype()
        || xs.track_op()
        || w.track_op()
        || !starts_aligned(xs)
        || !starts_aligned(w)
        || w.rank() != 2
    {
        return Ok(None);
    }
    Ok(Some(xs.apply_op2_no_bwd(w, &LtLinear)?))
}

/// Contiguous from the start of its buffer: cuBLASLt's heuristic (through cudarc, which
/// sets no alignment preference) assumes 256-byte aligned pointers, which an allocation
/// gives and an offset view may not.
fn starts_aligned(t: &Tensor) -> bool {
    let (_, layout) = t.storage_and_layout();
    layout.start_offset() == 0 && layout.is_contiguous()
}

/// One unbatched `C = op(A) · B` in cuBLASLt's column-major terms: `op(A)` is `m × k`
/// (A stored `k × m` when `transa`), B `k × n`, C `m × n`, with leading dimensions
/// `(lda, ldb, ldc)`; alpha 1, beta 0, no epilogue.
pub fn gemm_config(
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

thread_local! {
    /// One handle and workspace per thread and device: candle runs each thread on its
    /// own per-thread stream, and a workspace must not be shared by concurrent streams.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<CudaBlasLT>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> candle_core::Result<Arc<CudaBlasLT>> {
    HANDLES.with(|h| {
        if let Some(lt) = h.borrow().get(&dev.id()) {
            return Ok(lt.clone());
        }
        let lt = Arc::new(
            CudaBlasLT::new(dev.cuda_stream())
                .map_err(|e| candle_core::Error::Cuda(Box::new(e)))?,
        );
        h.borrow_mut().insert(dev.id(), lt.clone());
        Ok(lt)
    })
}

/// The custom op: `x` `[.., k]` times `w` `[n, k]` transposed, giving `[.., n]`.
struct LtLinear;

impl LtLinear {
    fn run<T: CudaDType + DeviceRepr>(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)>
    where
        CudaBlasLT: Matmul<T>,
    {
        let dev = &x.device;
        let (n, k) = wl.shape().dims2()?;
        let xdims = xl.shape().dims();
        if xdims.last() != Some(&k) {
            candle_core::bail!(
                "cublaslt linear: x {:?} against w {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let m = xl.shape().elem_count() / k;
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let mut out = unsafe { dev.alloc::<T>(m * n) }?;
        // Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is column-major outᵀ[n, m] =
        // (w as k×n)ᵀ · (x as k×m): A = w transposed, B = x, both with leading dim k.
        let cfg = gemm_config(true, (n, m, k), (k, k, n));
        let lt = handle(dev)?;
        unsafe { lt.matmul(cfg, &ws, &xs, &mut out, None, None) }
            .map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        let mut dims = xdims.to_vec();
        *dims.last_mut().expect("rank >= 1") = n;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(dims),
        ))
    }
}

impl CustomOp2 for LtLinear {
    fn name(&self) -> &'static str {
        "cublaslt-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("cublaslt-linear runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match x.dtype() {
            DType::BF16 => self.run::<bf16>(x, xl, w, wl),
            DType::F16 => self.run::<f16>(x, xl, w, wl),
            other => candle_core::bail!("cublaslt-linear: unsupported dtype {other:?}"),
        }
    }
}

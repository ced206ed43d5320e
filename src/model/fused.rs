//! Fused inference ops for the batched attention path and the MLP: on CUDA one kernel
//! each (src/model/fused.cu, PTX built by build.rs), on the CPU a plain loop with the
//! same arithmetic. A profile of the judge prefill on an H200 (bench/RESULTS.md) spent
//! 45% of the GPU time in the additive mask, the casts and the softmax around the
//! attention scores, and 12% in SiLU and the gate·up product, each a separate candle
//! kernel over a large tensor. No backward: training keeps the composed ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, WithDType};

use super::Result;

/// Softmax of `scale · scores` over the last dim under the causal mask of `n` new
/// queries after `past` cached keys (and a sliding `window`), in f32, returned in the
/// scores' dtype. `scores` is `[.., n, past + n]`, contiguous; query j (absolute
/// position past + j) sees key p when p <= past + j and past + j - p < window. Equals
/// `softmax(scale · scores + mask)` with the additive mask of `attention::Masks`.
pub fn causal_softmax(
    scores: &Tensor,
    past: usize,
    window: Option<usize>,
    scale: f64,
) -> Result<Tensor> {
    let dims = scores.dims();
    let (n, total) = match dims {
        [.., n, total] => (*n, *total),
        _ => {
            return Err(
                candle_core::Error::Msg("causal_softmax needs [.., n, total]".into()).into(),
            )
        }
    };
    if total != past + n {
        return Err(candle_core::Error::Msg(format!(
            "causal_softmax: {total} keys for {n} queries after {past} cached"
        ))
        .into());
    }
    let op = CausalSoftmax {
        n,
        past,
        window: window.unwrap_or(0),
        scale: scale as f32,
    };
    Ok(scores.contiguous()?.apply_op1_no_bwd(&op)?)
}

/// `silu(gate) · up` in one pass, f32 arithmetic, one rounding to the inputs' dtype.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(gate
        .contiguous()?
        .apply_op2_no_bwd(&up.contiguous()?, &SiluMul)?)
}

struct CausalSoftmax {
    n: usize,
    past: usize,
    /// 0: no window.
    window: usize,
    scale: f32,
}

impl CausalSoftmax {
    /// Visible keys `lo..hi` of row `r` (query `r % n`).
    fn visible(&self, r: usize) -> (usize, usize) {
        let qp = self.past + r % self.n;
        let lo = if self.window > 0 && qp + 1 > self.window {
            qp + 1 - self.window
        } else {
            0
        };
        (lo, qp + 1)
    }

    fn cpu<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let total = self.past + self.n;
        let mut y = vec![T::zero(); x.len()];
        for (r, (xr, yr)) in x.chunks(total).zip(y.chunks_mut(total)).enumerate() {
            let (lo, hi) = self.visible(r);
            let s: Vec<f32> = xr[lo..hi]
                .iter()
                .map(|v| v.to_f64() as f32 * self.scale)
                .collect();
            let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = s.iter().map(|v| (v - m).exp()).collect();
            let inv = 1.0 / e.iter().sum::<f32>();
            for (o, e) in yr[lo..hi].iter_mut().zip(e) {
                *o = T::from_f64(f64::from(e * inv));
            }
        }
        y
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("causal-softmax needs contiguous scores")
        };
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(self.cpu(&x[a..b])),
            CpuStorage::BF16(x) => CpuStorage::BF16(self.cpu(&x[a..b])),
            CpuStorage::F16(x) => CpuStorage::F16(self.cpu(&x[a..b])),
            other => candle_core::bail!("causal-softmax: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::causal_softmax(self, s, l)
    }
}

struct SiluMul;

fn silu_mul_cpu<T: WithDType>(g: &[T], u: &[T]) -> Vec<T> {
    g.iter()
        .zip(u)
        .map(|(g, u)| {
            let a = g.to_f64() as f32;
            T::from_f64(f64::from(a / (1.0 + (-a).exp()) * u.to_f64() as f32))
        })
        .collect()
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        u: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((ga, gb)), Some((ua, ub))) = (gl.contiguous_offsets(), ul.contiguous_offsets())
        else {
            candle_core::bail!("silu-mul needs contiguous inputs")
        };
        if gl.shape() != ul.shape() {
            candle_core::bail!("silu-mul: gate {:?} vs up {:?}", gl.shape(), ul.shape())
        }
        let out = match (g, u) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => {
                CpuStorage::F32(silu_mul_cpu(&g[ga..gb], &u[ua..ub]))
            }
            (CpuStorage::BF16(g), CpuStorage::BF16(u)) => {
                CpuStorage::BF16(silu_mul_cpu(&g[ga..gb], &u[ua..ub]))
            }
            (CpuStorage::F16(g), CpuStorage::F16(u)) => {
                CpuStorage::F16(silu_mul_cpu(&g[ga..gb], &u[ua..ub]))
            }
            _ => candle_core::bail!("silu-mul: unsupported or mixed dtypes"),
        };
        Ok((out, gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        g: &candle_core::CudaStorage,
        gl: &Layout,
        u: &candle_core::CudaStorage,
        ul: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::silu_mul(g, gl, u, ul)
    }
}

/// Whether `dtype` has a fused kernel (the float types).
pub fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, CudaStorage};
    use candle_core::{DType, Layout, Shape, WithDType};
    use half::{bf16, f16};

    use super::CausalSoftmax;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    const MODULE: &str = "self_judge_fused";

    fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
        Ok(match dtype {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            other => candle_core::bail!("fused kernels: unsupported dtype {other:?}"),
        })
    }

    fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
        candle_core::Error::Cuda(Box::new(e))
    }

    pub fn causal_softmax(
        op: &CausalSoftmax,
        s: &CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        fn run<T: CudaDType + DeviceRepr + WithDType>(
            op: &CausalSoftmax,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<CudaStorage> {
            let Some((a, b)) = l.contiguous_offsets() else {
                candle_core::bail!("causal-softmax needs contiguous scores")
            };
            let dev = &s.device;
            let total = op.past + op.n;
            let rows = (b - a) / total;
            let x = s.as_cuda_slice::<T>()?.slice(a..b);
            let mut y = unsafe { dev.alloc::<T>(b - a) }?;
            let name = format!("causal_softmax_{}", suffix(T::DTYPE)?);
            let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            // One warp per row, eight rows per block.
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let dims = [rows, op.n, total, op.past, op.window].map(|v| v as u32);
            let mut lb = f.builder();
            lb.arg(&x).arg(&mut y);
            for d in &dims {
                lb.arg(d);
            }
            lb.arg(&op.scale);
            unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
            Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
        }
        let out = match s.dtype() {
            DType::F32 => run::<f32>(op, s, l)?,
            DType::BF16 => run::<bf16>(op, s, l)?,
            DType::F16 => run::<f16>(op, s, l)?,
            other => candle_core::bail!("causal-softmax: unsupported dtype {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }

    pub fn silu_mul(
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        fn run<T: CudaDType + DeviceRepr + WithDType>(
            g: &CudaStorage,
            gl: &Layout,
            u: &CudaStorage,
            ul: &Layout,
        ) -> candle_core::Result<CudaStorage> {
            let (Some((ga, gb)), Some((ua, ub))) =
                (gl.contiguous_offsets(), ul.contiguous_offsets())
            else {
                candle_core::bail!("silu-mul needs contiguous inputs")
            };
            let dev = &g.device;
            let numel = gb - ga;
            let gs = g.as_cuda_slice::<T>()?.slice(ga..gb);
            let us = u.as_cuda_slice::<T>()?.slice(ua..ub);
            let mut o = unsafe { dev.alloc::<T>(numel) }?;
            let name = format!("silu_mul_{}", suffix(T::DTYPE)?);
            let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
            // 16-byte vectors per thread; the kernel strides over what the grid leaves.
            let per = 16 / T::DTYPE.size_in_bytes();
            let blocks = numel.div_ceil(per * 256).clamp(1, 65_535 * 16);
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut lb = f.builder();
            lb.arg(&gs).arg(&us).arg(&mut o).arg(&numel);
            unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
            Ok(CudaStorage::wrap_cuda_slice(o, dev.clone()))
        }
        if gl.shape() != ul.shape() || g.dtype() != u.dtype() {
            candle_core::bail!("silu-mul: gate {:?} vs up {:?}", gl.shape(), ul.shape())
        }
        let out = match g.dtype() {
            DType::F32 => run::<f32>(g, gl, u, ul)?,
            DType::BF16 => run::<bf16>(g, gl, u, ul)?,
            DType::F16 => run::<f16>(g, gl, u, ul)?,
            other => candle_core::bail!("silu-mul: unsupported dtype {other:?}"),
        };
        Ok((out, gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;
    use crate::model::attention::Masks;

    fn composed(scores: &Tensor, past: usize, window: Option<usize>, scale: f64) -> Tensor {
        let n = scores.dim(D::Minus2).unwrap();
        let mask = Masks::new(DType::F32, &Device::Cpu)
            .get(n, past, window)
            .unwrap();
        let s = (scores.to_dtype(DType::F32).unwrap() * scale).unwrap();
        let s = match mask {
            Some(m) => s.broadcast_add(&m).unwrap(),
            None => s,
        };
        candle_nn::ops::softmax_last_dim(&s).unwrap()
    }

    #[test]
    fn causal_softmax_equals_mask_plus_softmax() -> Result<()> {
        let dev = Device::Cpu;
        for (n, past, window) in [
            (5, 0, None),
            (4, 3, None),
            (6, 2, Some(3)),
            (1, 7, Some(4)),
            (1, 5, None),
        ] {
            let total = past + n;
            let scores = Tensor::randn(0f32, 3.0, (2, 3, n, total), &dev)?;
            let want = composed(&scores, past, window, 0.7);
            let got = causal_softmax(&scores, past, window, 0.7)?;
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "n {n} past {past} window {window:?}: {diff}");
            // bf16 in, bf16 out, f32 arithmetic: within one bf16 rounding.
            let got = causal_softmax(&scores.to_dtype(DType::BF16)?, past, window, 0.7)?;
            assert_eq!(got.dtype(), DType::BF16);
            let want = composed(&scores.to_dtype(DType::BF16)?, past, window, 0.7);
            let diff = (got.to_dtype(DType::F32)? - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 4e-3, "bf16 n {n} past {past}: {diff}");
        }
        let bad = Tensor::zeros((2, 3, 4), DType::F32, &dev)?;
        assert!(causal_softmax(&bad, 2, None, 1.0).is_err());
        Ok(())
    }

    #[test]
    fn silu_mul_equals_silu_times_up() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 2.0, (7, 13), &dev)?;
        let u = Tensor::randn(0f32, 2.0, (7, 13), &dev)?;
        let want = (g.silu()? * &u)?;
        let diff = (silu_mul(&g, &u)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        assert!(silu_mul(&g, &u.narrow(1, 0, 12)?).is_err());
        Ok(())
    }
}

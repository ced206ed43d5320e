//! Fused inference ops: on CUDA one kernel each (kernels.cu, PTX built by build.rs), on
//! the CPU a plain loop with the same arithmetic. An ncu profile of the judge prefill on
//! an H200 (bench/RESULTS.md) spent 45% of the GPU time in the additive mask, casts and
//! softmax around the attention scores, 12% in SiLU and the gate·up product and 12% in
//! the residual adds and RMSNorms, each a separate candle kernel over a large tensor.
//! No backward: training keeps the composed ops.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
};

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

/// The residual add and the RMSNorm that follows it in one pass: returns `(r, h)` with
/// `r = x + y` (in the inputs' dtype, as the residual stream) and
/// `h = r / sqrt(mean(r²) + eps) · w` (f32 arithmetic, one rounding). `x`, `y` are
/// `[rows, cols]`, `w` `[cols]`.
pub fn add_rms_norm(x: &Tensor, y: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let (rows, cols) = x.dims2()?;
    let op = AddRmsNorm { eps: eps as f32 };
    let both = x
        .contiguous()?
        .apply_op3_no_bwd(&y.contiguous()?, &w.contiguous()?, &op)?;
    debug_assert_eq!(both.dims(), [2, rows, cols]);
    Ok((both.get(0)?, both.get(1)?))
}

struct AddRmsNorm {
    eps: f32,
}

impl AddRmsNorm {
    /// Checks the shapes; `(rows, cols)`.
    fn dims(xl: &Layout, yl: &Layout, wl: &Layout) -> candle_core::Result<(usize, usize)> {
        let (rows, cols) = xl.shape().dims2()?;
        if yl.shape() != xl.shape() || wl.shape().dims() != [cols] {
            candle_core::bail!(
                "add-rms-norm: x {:?}, y {:?}, w {:?}",
                xl.shape(),
                yl.shape(),
                wl.shape()
            )
        }
        Ok((rows, cols))
    }

    fn cpu<T: WithDType>(&self, x: &[T], y: &[T], w: &[T], cols: usize) -> Vec<T> {
        let mut out = vec![T::zero(); 2 * x.len()];
        let (r_all, h_all) = out.split_at_mut(x.len());
        let rows = x.chunks(cols).zip(y.chunks(cols));
        for ((xr, yr), (r, h)) in rows.zip(r_all.chunks_mut(cols).zip(h_all.chunks_mut(cols))) {
            for ((o, a), b) in r.iter_mut().zip(xr).zip(yr) {
                *o = T::from_f64(f64::from(a.to_f64() as f32 + b.to_f64() as f32));
            }
            let ss: f32 = r.iter().map(|v| (v.to_f64() as f32).powi(2)).sum();
            let inv = 1.0 / (ss / cols as f32 + self.eps).sqrt();
            for ((o, v), g) in h.iter_mut().zip(r.iter()).zip(w) {
                *o = T::from_f64(f64::from(v.to_f64() as f32 * inv * g.to_f64() as f32));
            }
        }
        out
    }
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = Self::dims(xl, yl, wl)?;
        let (Some((xa, xb)), Some((ya, yb)), Some((wa, wb))) = (
            xl.contiguous_offsets(),
            yl.contiguous_offsets(),
            wl.contiguous_offsets(),
        ) else {
            candle_core::bail!("add-rms-norm needs contiguous inputs")
        };
        let out = match (x, y, w) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(w)) => {
                CpuStorage::F32(self.cpu(&x[xa..xb], &y[ya..yb], &w[wa..wb], cols))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(y), CpuStorage::BF16(w)) => {
                CpuStorage::BF16(self.cpu(&x[xa..xb], &y[ya..yb], &w[wa..wb], cols))
            }
            (CpuStorage::F16(x), CpuStorage::F16(y), CpuStorage::F16(w)) => {
                CpuStorage::F16(self.cpu(&x[xa..xb], &y[ya..yb], &w[wa..wb], cols))
            }
            _ => candle_core::bail!("add-rms-norm: unsupported or mixed dtypes"),
        };
        Ok((out, Shape::from((2, rows, cols))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        y: &candle_core::CudaStorage,
        yl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (rows, cols) = Self::dims(xl, yl, wl)?;
        cuda::add_rms_norm(self.eps, (x, xl), (y, yl), (w, wl), (rows, cols))
    }
}

/// `[a, b, c, d]` to `[a, c, b, d]`, contiguous: the head transposes around the batched
/// attention, as one copy of whole `d`-element rows (candle's generic strided copy
/// indexes every element through all four dims).
pub fn swap12(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    Ok(x.contiguous()?.apply_op1_no_bwd(&Swap12)?)
}

struct Swap12;

fn swap12_cpu<T: Copy>(x: &[T], [a, b, c, d]: [usize; 4]) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    for ai in 0..a {
        for ci in 0..c {
            for bi in 0..b {
                let at = ((ai * b + bi) * c + ci) * d;
                y.extend_from_slice(&x[at..at + d]);
            }
        }
    }
    y
}

impl CustomOp1 for Swap12 {
    fn name(&self) -> &'static str {
        "swap12"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((lo, hi)), (a, b, c, d)) = (l.contiguous_offsets(), l.shape().dims4()?) else {
            candle_core::bail!("swap12 needs a contiguous input")
        };
        let dims = [a, b, c, d];
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(swap12_cpu(&x[lo..hi], dims)),
            CpuStorage::BF16(x) => CpuStorage::BF16(swap12_cpu(&x[lo..hi], dims)),
            CpuStorage::F16(x) => CpuStorage::F16(swap12_cpu(&x[lo..hi], dims)),
            other => candle_core::bail!("swap12: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from((a, c, b, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::swap12(s, l)
    }
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
mod cuda;

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
    fn add_rms_norm_equals_add_then_rms_norm() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 24), &dev)?;
        let y = Tensor::randn(0f32, 1.0, (5, 24), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 24, &dev)?;
        let want_r = (&x + &y)?;
        let want_h = candle_nn::ops::rms_norm_slow(&want_r, &w, 1e-5)?;
        let (r, h) = add_rms_norm(&x, &y, &w, 1e-5)?;
        assert_eq!(
            (r.dims(), h.dims()),
            ([5, 24].as_slice(), [5, 24].as_slice())
        );
        let dr = (r - want_r)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let dh = (h - want_h)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(dr < 1e-6 && dh < 1e-5, "{dr} {dh}");
        assert!(add_rms_norm(&x, &y, &w.narrow(0, 0, 20)?, 1e-5).is_err());
        Ok(())
    }

    #[test]
    fn swap12_equals_transpose() -> Result<()> {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &Device::Cpu)?.reshape((2, 3, 4, 5))?;
        let want = x.transpose(1, 2)?.contiguous()?;
        for dt in [DType::F32, DType::BF16] {
            let got = swap12(&x.to_dtype(dt)?)?.to_dtype(DType::F32)?;
            assert_eq!(got.dims(), [2, 4, 3, 5]);
            assert_eq!(
                got.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?
            );
        }
        // A view at an offset (as the batched path's runs are) is read from its start.
        let view = x
            .reshape((6, 4, 5))?
            .narrow(0, 3, 3)?
            .reshape((1, 3, 4, 5))?;
        let want = view.transpose(1, 2)?.contiguous()?;
        let diff = (swap12(&view)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        assert!(swap12(&x.reshape((6, 4, 5))?).is_err());
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

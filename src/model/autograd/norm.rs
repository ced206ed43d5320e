//! RMSNorm with a backward: the graph keeps the input only, the inverse RMS is
//! recomputed per row in the backward.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use super::custom::{attach2, cpu_f32, Backward2};

/// `x / rms(x) * w` over the last dim (candle's kernel) with a backward for `x` and, when
/// it is trained, `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let y = candle_nn::ops::rms_norm(&x.detach().contiguous()?, &w.detach(), eps)?;
    attach2(x, w, y, RmsNormBwd { eps })
}

struct RmsNormBwd {
    eps: f32,
}

impl Backward2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Contiguous (no copy when already so) for the loops, which read in place.
        let (x, w, gy) = (&x.contiguous()?, &w.contiguous()?, &gy.contiguous()?);
        let (dx, dw) = match (cpu_f32(x)?, cpu_f32(w)?, cpu_f32(gy)?) {
            (Some(xs), Some(ws), Some(gs)) => {
                let (dx, dw) = rms_norm_backward_cpu(&xs, &ws, &gs, self.eps);
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dw, w.shape(), w.device())?,
                )
            }
            _ => rms_norm_backward(x, w, gy, self.eps)?,
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// The backward as device-generic tensor ops (f32 inside): returns (dx, dw).
pub(crate) fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    gy: &Tensor,
    eps: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let h = x.dim(D::Minus1)?;
    let dt = x.dtype();
    let x2 = x.to_dtype(DType::F32)?.reshape(((), h))?;
    let g2 = gy.to_dtype(DType::F32)?.reshape(((), h))?;
    let w32 = w.to_dtype(DType::F32)?;
    let r = (x2.sqr()?.mean_keepdim(1)? + eps as f64)?.sqrt()?.recip()?;
    let xhat = x2.broadcast_mul(&r)?;
    let gw = g2.broadcast_mul(&w32)?;
    let dot = (&gw * &xhat)?.mean_keepdim(1)?;
    let dx = (gw - xhat.broadcast_mul(&dot)?)?.broadcast_mul(&r)?;
    let dw = (g2 * xhat)?.sum(0)?;
    Ok((
        dx.reshape(x.shape())?.to_dtype(dt)?,
        dw.to_dtype(w.dtype())?,
    ))
}

/// The same backward as one pass over the rows (rayon), f32 on the CPU.
pub(crate) fn rms_norm_backward_cpu(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    let mut dx = vec![0f32; x.len()];
    // Rows in blocks, each block with its own partial dw, summed at the end.
    let block = 64 * h;
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(gy.par_chunks(block)))
        .map(|(dxb, (xb, gb))| {
            let mut dw = vec![0f32; h];
            for ((dxr, xr), gr) in dxb.chunks_mut(h).zip(xb.chunks(h)).zip(gb.chunks(h)) {
                let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
                let r = 1.0 / (ms + eps).sqrt();
                let mut dot = 0f32;
                for i in 0..h {
                    let xhat = xr[i] * r;
                    dot += gr[i] * w[i] * xhat;
                    dw[i] += gr[i] * xhat;
                }
                let dot = dot / h as f32;
                for i in 0..h {
                    dxr[i] = r * (gr[i] * w[i] - xr[i] * r * dot);
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; h];
    for p in partial {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::testing::{assert_close, check_gradients, Input};
    use candle_core::{Device, Var};

    #[test]
    fn loop_and_tensor_ops_agree() {
        let dev = Device::Cpu;
        let x = crate::seeded_randn(1, 0.0, 1.0, (70, 16), &dev).unwrap();
        let w = crate::seeded_randn(2, 1.0, 0.2, 16, &dev).unwrap();
        let g = crate::seeded_randn(3, 0.0, 1.0, (70, 16), &dev).unwrap();
        let (dx, dw) = rms_norm_backward(&x, &w, &g, 1e-5).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (dx2, dw2) = rms_norm_backward_cpu(&v(&x), &v(&w), &v(&g), 1e-5);
        assert_close(&v(&dx), &dx2, 1e-5);
        assert_close(&v(&dw), &dw2, 1e-5);
    }

    #[test]
    fn gradients_match_the_composed_norm() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&crate::seeded_randn(4, 0.0, 1.0, (5, 8), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&crate::seeded_randn(5, 1.0, 0.3, 8, &dev).unwrap()).unwrap();
        check_gradients(
            &[Input::new("x", &x), Input::new("w", &w)],
            |t| rms_norm(t[0], t[1], 1e-5),
            |t| candle_nn::ops::rms_norm_slow(t[0], t[1], 1e-5),
        );
    }
}

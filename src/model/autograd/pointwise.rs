//! Rotary embedding and SiLU·up with a backward.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::custom::{attach1, attach2, cpu_f32, Backward1, Backward2};

/// Rotates `[T, heads, d]` by the `[T, d/2]` tables (candle's kernel, rotate-half
/// layout). The backward rotates the gradient back: a rotation's transpose is the
/// rotation by the opposite angle, so it is the same kernel with `-sin`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let y = rope_kernel(&x.detach(), cos, sin)?;
    attach1(
        x,
        y,
        RopeBwd {
            cos: cos.clone(),
            sin: sin.clone(),
        },
    )
}

fn rope_kernel(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let xs = x.unsqueeze(0)?.contiguous()?;
    candle_nn::rotary_emb::rope_thd(&xs, cos, sin)?.squeeze(0)
}

struct RopeBwd {
    cos: Tensor,
    sin: Tensor,
}

impl Backward1 for RopeBwd {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn backward(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let gy = gy.to_dtype(self.cos.dtype())?;
        rope_kernel(&gy, &self.cos, &self.sin.neg()?).map(Some)
    }
}

/// `silu(gate) · up` (one fused pass) with a backward for both.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    let y = crate::fused::silu_mul(&gate.detach(), &up.detach())
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    attach2(gate, up, y, SiluMulBwd)
}

struct SiluMulBwd;

impl Backward2 for SiluMulBwd {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn backward(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Contiguous (no copy when already so) for the loops, which read in place.
        let (gate, up, gy) = (&gate.contiguous()?, &up.contiguous()?, &gy.contiguous()?);
        let (dg, du) = match (cpu_f32(gate)?, cpu_f32(up)?, cpu_f32(gy)?) {
            (Some(g), Some(u), Some(d)) => {
                let (dg, du) = silu_mul_backward_cpu(&g, &u, &d);
                (
                    Tensor::from_vec(dg, gate.shape(), gate.device())?,
                    Tensor::from_vec(du, up.shape(), up.device())?,
                )
            }
            _ => silu_mul_backward(gate, up, gy)?,
        };
        Ok((Some(dg), Some(du)))
    }
}

/// The backward as device-generic tensor ops: with `s = sigmoid(gate)`,
/// `d_up = gy · gate · s` and `d_gate = gy · up · s · (1 + gate · (1 - s))`.
pub(crate) fn silu_mul_backward(
    gate: &Tensor,
    up: &Tensor,
    gy: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dt = gate.dtype();
    let g = gate.to_dtype(DType::F32)?;
    let u = up.to_dtype(DType::F32)?;
    let d = gy.to_dtype(DType::F32)?;
    let s = candle_nn::ops::sigmoid(&g)?;
    let du = (&d * (&g * &s)?)?;
    let dsilu = (&s * ((&g * (1.0 - &s)?)? + 1.0)?)?;
    let dg = ((d * u)? * dsilu)?;
    Ok((dg.to_dtype(dt)?, du.to_dtype(up.dtype())?))
}

/// The same backward in one pass (rayon), f32 on the CPU.
pub(crate) fn silu_mul_backward_cpu(gate: &[f32], up: &[f32], gy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0f32; gate.len()];
    let mut du = vec![0f32; gate.len()];
    const BLOCK: usize = 1 << 14;
    dg.par_chunks_mut(BLOCK)
        .zip(du.par_chunks_mut(BLOCK))
        .zip(
            gate.par_chunks(BLOCK)
                .zip(up.par_chunks(BLOCK))
                .zip(gy.par_chunks(BLOCK)),
        )
        .for_each(|((dgb, dub), ((gb, ub), db))| {
            for i in 0..gb.len() {
                let g = gb[i];
                let s = 1.0 / (1.0 + (-g).exp());
                dub[i] = db[i] * g * s;
                dgb[i] = db[i] * ub[i] * s * (1.0 + g * (1.0 - s));
            }
        });
    (dg, du)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::testing::{assert_close, check_gradients, Input};
    use crate::rope::Rotary;
    use candle_core::{Device, Var};

    #[test]
    fn silu_mul_loop_and_tensor_ops_agree() {
        let dev = Device::Cpu;
        let g = crate::seeded_randn(1, 0.0, 2.0, (40, 30), &dev).unwrap();
        let u = crate::seeded_randn(2, 0.0, 1.0, (40, 30), &dev).unwrap();
        let d = crate::seeded_randn(3, 0.0, 1.0, (40, 30), &dev).unwrap();
        let (a, b) = silu_mul_backward(&g, &u, &d).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (a2, b2) = silu_mul_backward_cpu(&v(&g), &v(&u), &v(&d));
        assert_close(&v(&a), &a2, 1e-6);
        assert_close(&v(&b), &b2, 1e-6);
    }

    #[test]
    fn silu_mul_gradients() {
        let dev = Device::Cpu;
        let g =
            Var::from_tensor(&crate::seeded_randn(4, 0.0, 2.0, (6, 10), &dev).unwrap()).unwrap();
        let u =
            Var::from_tensor(&crate::seeded_randn(5, 0.0, 1.0, (6, 10), &dev).unwrap()).unwrap();
        check_gradients(
            &[Input::new("gate", &g), Input::new("up", &u)],
            |t| silu_mul(t[0], t[1]),
            |t| t[0].silu()? * t[1],
        );
    }

    #[test]
    fn rope_gradients() {
        let dev = Device::Cpu;
        let (t, heads, d) = (7, 3, 8);
        let x = Var::from_tensor(&crate::seeded_randn(6, 0.0, 1.0, (t, heads, d), &dev).unwrap())
            .unwrap();
        let angles: Vec<f32> = (0..t * d / 2).map(|i| 0.37 * i as f32).collect();
        let cos =
            Tensor::from_vec(angles.iter().map(|a| a.cos()).collect(), (t, d / 2), &dev).unwrap();
        let sin =
            Tensor::from_vec(angles.iter().map(|a| a.sin()).collect(), (t, d / 2), &dev).unwrap();
        check_gradients(
            &[Input::new("x", &x)],
            |v| rope(v[0], &cos, &sin),
            |v| {
                Rotary::apply_differentiable(v[0], &cos, &sin)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            },
        );
    }
}

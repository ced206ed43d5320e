//! Projections over a frozen weight, with and without a LoRA adapter, as single ops:
//! the backward computes no gradient for the frozen weight (candle's matmul backward
//! always does), and under LoRA the graph keeps neither the dropout mask nor the
//! dropped input nor the low-rank intermediate: they are recomputed.

use candle_core::Tensor;

use super::custom::{attach1, attach3, Backward1, Backward3};

/// `x Wᵀ (+ bias)` for a frozen `w` `[out, in]` (and bias), with a backward for `x` only.
pub fn frozen_linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = project(&x.detach(), w, bias)?;
    attach1(x, y, FrozenBwd { w: w.clone() })
}

fn project(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = if x.rank() == 2 {
        x.matmul(&w.t()?)?
    } else {
        x.broadcast_matmul(&w.t()?)?
    };
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `g W`, the input gradient of a projection by `w`.
fn input_grad(g: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if g.rank() == 2 {
        g.matmul(w)
    } else {
        g.broadcast_matmul(w)
    }
}

struct FrozenBwd {
    w: Tensor,
}

impl Backward1 for FrozenBwd {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn backward(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        input_grad(gy, &self.w).map(Some)
    }
}

/// `x Wᵀ (+ bias) + scale · (x ⊙ m) Aᵀ Bᵀ` for a frozen `w` and trained `a` `[r, in]`,
/// `b` `[out, r]`, where `m` is the dropout mask `mask` regenerates (`None`: no
/// dropout). One op: the graph holds `x`, `a`, `b` and the output.
pub fn dropout_lora(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    (a, b, scale): (&Tensor, &Tensor, f64),
    mask: Option<DropoutMask>,
) -> candle_core::Result<Tensor> {
    let xd = x.detach();
    let dropped = match &mask {
        Some(m) => (&xd * m.tensor(&xd)?)?,
        None => xd.clone(),
    };
    let low = project(&project(&dropped, &a.detach(), None)?, &b.detach(), None)?;
    let y = (project(&xd, w, bias)? + (low * scale)?)?;
    attach3(
        x,
        a,
        b,
        y,
        LoraBwd {
            w: w.clone(),
            scale,
            mask,
        },
    )
}

/// A dropout mask drawn from a generator that can draw it again: `draw(shape)` returns
/// the same `keep / (1 - p)` or `0` values every time.
#[derive(Clone)]
pub struct DropoutMask {
    draw: std::sync::Arc<MaskFn>,
}

type MaskFn = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync;

impl DropoutMask {
    /// A mask that `draw` makes for a tensor like the given one.
    pub fn new(
        draw: impl Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        Self {
            draw: std::sync::Arc::new(draw),
        }
    }

    /// The mask for a tensor like `like` (same shape, dtype and device).
    pub fn tensor(&self, like: &Tensor) -> candle_core::Result<Tensor> {
        (self.draw)(like)
    }
}

struct LoraBwd {
    w: Tensor,
    scale: f64,
    mask: Option<DropoutMask>,
}

impl Backward3 for LoraBwd {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn backward(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let m = self.mask.as_ref().map(|m| m.tensor(x)).transpose()?;
        let dropped = match &m {
            Some(m) => (x * m)?,
            None => x.clone(),
        };
        let in_dim = x.dim(candle_core::D::Minus1)?;
        let rows = |t: &Tensor, cols: usize| t.reshape(((), cols));
        let (out_dim, r) = b.dims2()?;
        let g = (rows(gy, out_dim)? * self.scale)?;
        let d2 = rows(&dropped, in_dim)?;
        let low = d2.matmul(&a.t()?)?; // [T, r]
        let db = g.t()?.matmul(&low)?; // [out, r]
        let dlow = g.matmul(b)?; // [T, r]
        let da = dlow.t()?.matmul(&d2)?; // [r, in]
        let mut dx = dlow.matmul(a)?; // [T, in]
        if let Some(m) = &m {
            dx = (dx * rows(m, in_dim)?)?;
        }
        let dx = (dx + rows(&input_grad(gy, &self.w)?, in_dim)?)?.reshape(x.shape())?;
        debug_assert_eq!(r, a.dim(0)?);
        Ok((Some(dx), Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::testing::{check_gradients, Input};
    use candle_core::{Device, Var};

    fn var(seed: u64, shape: (usize, usize)) -> Var {
        Var::from_tensor(&crate::seeded_randn(seed, 0.0, 1.0, shape, &Device::Cpu).unwrap())
            .unwrap()
    }

    #[test]
    fn frozen_linear_gradients() {
        let w = crate::seeded_randn(1, 0.0, 1.0, (5, 7), &Device::Cpu).unwrap();
        let bias = crate::seeded_randn(2, 0.0, 1.0, 5, &Device::Cpu).unwrap();
        let x = var(3, (4, 7));
        check_gradients(
            &[Input::new("x", &x)],
            |t| frozen_linear(t[0], &w, Some(&bias)),
            |t| t[0].matmul(&w.t()?)?.broadcast_add(&bias),
        );
    }

    #[test]
    fn lora_gradients_with_and_without_dropout() {
        let dev = Device::Cpu;
        let w = crate::seeded_randn(1, 0.0, 1.0, (6, 7), &dev).unwrap();
        let (x, a, b) = (var(4, (9, 7)), var(5, (3, 7)), var(6, (6, 3)));
        let keep: Vec<f32> = (0..63)
            .map(|i| if i % 5 == 0 { 0.0 } else { 1.25 })
            .collect();
        let fixed = Tensor::from_vec(keep, (9, 7), &dev).unwrap();
        for mask in [None, Some(fixed)] {
            let draw = mask
                .clone()
                .map(|m| DropoutMask::new(move |_| Ok(m.clone())));
            check_gradients(
                &[
                    Input::new("x", &x),
                    Input::new("a", &a),
                    Input::new("b", &b),
                ],
                |t| dropout_lora(t[0], &w, None, (t[1], t[2], 0.5), draw.clone()),
                |t| {
                    let dropped = match &mask {
                        Some(m) => (t[0] * m)?,
                        None => t[0].clone(),
                    };
                    let low = dropped.matmul(&t[1].t()?)?.matmul(&t[2].t()?)?;
                    t[0].matmul(&w.t()?)? + (low * 0.5)?
                },
            );
        }
    }
}

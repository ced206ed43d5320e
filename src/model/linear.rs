//! Linear projections over dense or GGUF-quantized weights, with an optional LoRA
//! adapter so that training can reuse the inference decoder unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ops::Pass;
use super::Result;

/// Where a projection's weight lives.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` dense weight in the model dtype.
    Dense(Tensor),
    /// Quantized GGUF weight, multiplied without dequantizing.
    Quantized(QMatMul),
}

/// A low-rank adapter `x · Aᵀ · Bᵀ · scale` added to a projection. The model without
/// its adapters (the reference under LoRA) is a copy with them removed
/// ([`super::Decoder::without_adapters`]): no switch is shared between the two.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    pub scale: f64,
    pub dropout: Option<LoraDropout>,
}

/// Dropout on the adapter's input while training. Masks come from a counter-based seeded
/// generator (not candle's thread RNG) so that a resumed run draws the same masks as an
/// uninterrupted one: the counter is part of the saved training state.
#[derive(Debug, Clone)]
pub struct LoraDropout {
    pub p: f32,
    pub seed: u64,
    /// Masks drawn so far, shared by all adapters of a model.
    pub counter: Arc<AtomicU64>,
}

impl LoraDropout {
    fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(xs.clone());
        }
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = StdRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        Ok(xs.mul(&mask)?)
    }
}

/// `y = x Wᵀ + b (+ LoRA)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

impl Linear {
    /// A projection over a dense `[out, in]` weight.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: LinearWeight::Dense(weight),
            bias,
            lora: None,
        }
    }

    /// Applies the projection to `[T, in]` (or any leading dims), as at inference.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, Pass::Inference)
    }

    /// Applies the projection in `pass`: LoRA dropout only in a training pass that
    /// asks for it.
    pub fn forward_t(&self, xs: &Tensor, pass: Pass) -> Result<Tensor> {
        let mut y = match &self.weight {
            LinearWeight::Dense(w) if xs.rank() == 2 => xs.matmul(&w.t()?)?,
            LinearWeight::Dense(w) => xs.broadcast_matmul(&w.t()?)?,
            LinearWeight::Quantized(q) => {
                let dt = xs.dtype();
                // Quantized kernels take f32 activations.
                q.forward(&xs.to_dtype(candle_core::DType::F32)?)?
                    .to_dtype(dt)?
            }
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let x = match &l.dropout {
                Some(d) if pass.dropout() => d.apply(xs)?,
                _ => xs.clone(),
            };
            let low = x.broadcast_matmul(&l.a.t()?)?.broadcast_matmul(&l.b.t()?)?;
            y = (y + (low * l.scale)?)?;
        }
        Ok(y)
    }
}

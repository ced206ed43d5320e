//! Linear projections over dense or GGUF-quantized weights, with an optional LoRA
//! adapter so that training can reuse the inference decoder unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::autograd::{self, DropoutMask};
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
    /// Draws the next mask (advancing the shared counter) as a generator that makes the
    /// same mask every time it is asked, so a backward can recompute it instead of
    /// keeping it; `None` when `p` is 0.
    fn draw(&self) -> Option<DropoutMask> {
        if self.p <= 0.0 {
            return None;
        }
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        let (p, seed) = (self.p, self.seed);
        Some(DropoutMask::new(move |like: &Tensor| {
            let mut rng = StdRng::seed_from_u64(seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let keep = 1.0 / (1.0 - p);
            let mask: Vec<f32> = (0..like.elem_count())
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect();
            Tensor::from_vec(mask, like.shape(), like.device())?.to_dtype(like.dtype())
        }))
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
        if let (LinearWeight::Dense(w), true) = (&self.weight, pass.differentiable()) {
            if !w.track_op() {
                return self.frozen(xs, w, pass);
            }
        }
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
            let x = match l
                .dropout
                .as_ref()
                .filter(|_| pass.dropout())
                .and_then(|d| d.draw())
            {
                Some(mask) => (xs * mask.tensor(xs)?)?,
                None => xs.clone(),
            };
            let low = x.broadcast_matmul(&l.a.t()?)?.broadcast_matmul(&l.b.t()?)?;
            y = (y + (low * l.scale)?)?;
        }
        Ok(y)
    }
}

impl Linear {
    /// Whether the weight, bias or adapter is trained.
    pub fn has_trainable(&self) -> bool {
        let dense = matches!(&self.weight, LinearWeight::Dense(w) if w.track_op());
        let lora = self
            .lora
            .as_ref()
            .is_some_and(|l| l.a.track_op() || l.b.track_op());
        dense || lora || self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    /// A training pass over a frozen dense weight: one op with its own backward (no
    /// gradient for the weight; under LoRA the dropout mask is recomputed, not kept).
    fn frozen(&self, xs: &Tensor, w: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(match &self.lora {
            None => autograd::frozen_linear(xs, w, self.bias.as_ref())?,
            Some(l) => {
                let mask = l
                    .dropout
                    .as_ref()
                    .filter(|_| pass.dropout())
                    .and_then(|d| d.draw());
                autograd::dropout_lora(xs, w, self.bias.as_ref(), (&l.a, &l.b, l.scale), mask)?
            }
        })
    }
}

//! Linear projections over dense or GGUF-quantized weights, with an optional LoRA
//! adapter so that training can reuse the inference decoder unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use super::Result;

/// Where a projection's weight lives.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` dense weight in the model dtype.
    Dense(Tensor),
    /// Quantized GGUF weight, multiplied without dequantizing.
    Quantized(QMatMul),
}

/// A low-rank adapter `x · Aᵀ · Bᵀ · scale` added to a projection. `enabled` is shared by
/// all adapters of one model so the reference pass can switch them off together.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
    pub enabled: Arc<AtomicBool>,
    pub training: Arc<AtomicBool>,
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

    /// Applies the projection to `[T, in]` (or any leading dims).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut y = match &self.weight {
            LinearWeight::Dense(w) => match xs.rank() {
                2 => xs.matmul(&w.t()?)?,
                _ => xs.broadcast_matmul(&w.t()?)?,
            },
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
            if l.enabled.load(Ordering::Relaxed) {
                let x = if l.dropout > 0.0 && l.training.load(Ordering::Relaxed) {
                    candle_nn::ops::dropout(xs, l.dropout)?
                } else {
                    xs.clone()
                };
                let low = x.broadcast_matmul(&l.a.t()?)?.broadcast_matmul(&l.b.t()?)?;
                y = (y + (low * l.scale)?)?;
            }
        }
        Ok(y)
    }
}

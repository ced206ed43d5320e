//! How a forward pass runs (serving or training), shared by the decoder, attention and
//! the projections.

use candle_core::{Tensor, D};

use super::error::Result;

/// What a forward pass is for, given to every forward explicitly (as `forward_t(xs,
/// train)` in candle): serving uses candle's fast norm, rotary and softmax kernels (and
/// our fused kernels where enabled), which have no backward pass; training uses the ops
/// of [`super::autograd`] (the same kernels with a backward of their own) and may apply
/// LoRA dropout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Inference,
    Train {
        /// Apply the adapters' dropout (`lora_dropout`) to their inputs.
        dropout: bool,
    },
}

impl Pass {
    /// A training pass without dropout (reference log-probabilities, gradient checks).
    pub const TRAIN: Self = Self::Train { dropout: false };

    /// Whether every op must have a backward pass.
    pub fn differentiable(self) -> bool {
        matches!(self, Self::Train { .. })
    }

    /// Whether LoRA dropout applies.
    pub fn dropout(self) -> bool {
        matches!(self, Self::Train { dropout: true })
    }
}

/// Numerically stable softmax over the last dim built from differentiable primitives;
/// the max is detached because softmax is shift-invariant.
pub fn softmax_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

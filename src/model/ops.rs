//! The choice between fused kernels and differentiable primitives, shared by the
//! decoder and attention.

use candle_core::{Tensor, D};

use super::error::Result;

/// Which implementation of norm, rotary and softmax to use. The fused kernels are
/// faster but have no backward pass, so training selects the differentiable ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsMode {
    Fused,
    Differentiable,
}

/// Numerically stable softmax over the last dim built from differentiable primitives;
/// the max is detached because softmax is shift-invariant.
pub fn softmax_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

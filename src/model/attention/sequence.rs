//! Attention of one sequence's new tokens over its keys and values: the CPU path.
//! Query heads are grouped onto their shared key/value head by a reshape, so keys and
//! values are never repeated in memory.

use candle_core::{DType, Tensor};

use crate::ops::{softmax_differentiable, Pass};
use crate::Result;

/// `q` `[n, hq, d]` as `[hkv, groups * n, d]` (heads hkv*g..hkv*(g+1) share one kv
/// head), and `k`, `v` `[total, hkv, d]` as `[hkv, total, d]`: on the CPU strided views
/// (its matmul reads any strides, and copying the whole cache into head-major order
/// would cost a decode step as much as the product); cuBLAS needs dense matrices.
fn grouped(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, hq, d) = q.dims3()?;
    let hkv = k.dim(1)?;
    let qg = q
        .transpose(0, 1)?
        .contiguous()?
        .reshape((hkv, (hq / hkv) * n, d))?;
    let heads_first = |x: &Tensor| -> Result<Tensor> {
        let t = x.transpose(0, 1)?;
        Ok(if x.device().is_cpu() {
            t
        } else {
            t.contiguous()?
        })
    };
    Ok((qg, heads_first(k)?, heads_first(v)?))
}

/// `[hkv, groups * n, d]` back to `[n, hq * d]`.
fn ungrouped(out: &Tensor, (n, hq, d): (usize, usize, usize)) -> Result<Tensor> {
    Ok(out
        .reshape((hq, n, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, hq * d))?)
}

/// Attention of `q` (`[n, hq, d]`, the new tokens) over `k`, `v` (`[past + n, hkv, d]`)
/// under `mask` (from [`crate::attention::Masks::get`]), `[n, hq * d]`: scores scaled after the
/// product, the additive mask, softmax in f32 (differentiable in a training pass).
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    pass: Pass,
) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let (total, hkv, _) = k.dims3()?;
    let groups = hq / hkv;
    let (qg, kt, vt) = grouped(q, k, v)?;
    let mut scores = (qg.matmul(&kt.t()?)? * (1.0 / (d as f64).sqrt()))?; // [hkv, groups*n, total]
    if let Some(mask) = mask {
        scores = scores
            .reshape((hkv, groups, n, total))?
            .broadcast_add(mask)?
            .reshape((hkv, groups * n, total))?;
    }
    let in_dtype = scores.dtype();
    let scores = scores.to_dtype(DType::F32)?;
    let probs = if pass.differentiable() {
        softmax_differentiable(&scores)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    }
    .to_dtype(in_dtype)?;
    ungrouped(&probs.matmul(&vt)?, (n, hq, d))
}

/// [`attend`] for inference with the scale, causal mask and softmax in one pass over
/// the scores ([`crate::fused::causal_softmax`]), `past` cached tokens before
/// `q`'s and an optional sliding `window`: no mask tensor, no scaled or masked copy of
/// the scores.
pub fn attend_fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (past, window): (usize, Option<usize>),
) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let (total, hkv, _) = k.dims3()?;
    let groups = hq / hkv;
    let (qg, kt, vt) = grouped(q, k, v)?;
    let scores = qg.matmul(&kt.t()?)?.reshape((hkv, groups, n, total))?;
    let scale = 1.0 / (d as f64).sqrt();
    let probs = crate::fused::causal_softmax(&scores, past, window, scale)?;
    ungrouped(
        &probs.reshape((hkv, groups * n, total))?.matmul(&vt)?,
        (n, hq, d),
    )
}

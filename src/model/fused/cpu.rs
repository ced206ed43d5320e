//! The fused ops on the CPU, in f32 (bf16 and f16 convert exactly to f32), with the
//! kernels' arithmetic: results are rounded once to the inputs' dtype, and where a kernel
//! rounds an intermediate (the residual of add + RMSNorm) so does this.
//!
//! Each loop splits its rows across rayon's pool (the one the packed projections run
//! on, so an op never waits on a second pool's threads), reads f32 inputs in place and
//! writes its output once.

use std::borrow::Cow;
use std::ops::Range;

use candle_core::{CpuStorage, DType};
use half::{bf16, f16};
use rayon::prelude::*;

use super::CausalSoftmax;

/// Elements per rayon task: below this an op runs on the calling thread's share only
/// (a task must outweigh the cost of handing it to another thread).
const GRAIN: usize = 1 << 14;

/// Rows per task for rows of `cols` elements.
fn rows_per_task(cols: usize) -> usize {
    (GRAIN / cols.max(1)).max(1)
}

/// The float elements of `s` in `span` as f32: borrowed for f32, converted otherwise.
pub fn floats(s: &CpuStorage, span: Range<usize>) -> candle_core::Result<Cow<'_, [f32]>> {
    Ok(match s {
        CpuStorage::F32(x) => Cow::Borrowed(&x[span]),
        CpuStorage::BF16(x) => Cow::Owned(x[span].iter().map(|v| v.to_f32()).collect()),
        CpuStorage::F16(x) => Cow::Owned(x[span].iter().map(|v| v.to_f32()).collect()),
        other => candle_core::bail!("fused ops take f32, bf16 or f16, not {other:?}"),
    })
}

/// f32 results as a storage of `dtype`, each rounded once.
pub fn storage(v: Vec<f32>, dtype: DType) -> candle_core::Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
        other => candle_core::bail!("fused ops take f32, bf16 or f16, not {other:?}"),
    })
}

/// Rounding of an f32 to `dtype` and back.
pub fn rounding(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::BF16 => |v| bf16::from_f32(v).to_f32(),
        DType::F16 => |v| f16::from_f32(v).to_f32(),
        _ => |v| v,
    }
}

/// [`super::causal_softmax`] row by row.
pub fn causal_softmax(op: &CausalSoftmax, x: &[f32]) -> Vec<f32> {
    let total = op.past + op.n;
    let mut y = vec![0f32; x.len()];
    let per = rows_per_task(total);
    y.par_chunks_mut(total * per)
        .zip(x.par_chunks(total * per))
        .enumerate()
        .for_each(|(task, (ys, xs))| {
            for (i, (yr, xr)) in ys.chunks_mut(total).zip(xs.chunks(total)).enumerate() {
                let (lo, hi) = op.visible(task * per + i);
                let m = xr[lo..hi]
                    .iter()
                    .map(|v| v * op.scale)
                    .fold(f32::NEG_INFINITY, f32::max);
                for (o, v) in yr[lo..hi].iter_mut().zip(&xr[lo..hi]) {
                    *o = (v * op.scale - m).exp();
                }
                let inv = 1.0 / yr[lo..hi].iter().sum::<f32>();
                yr[lo..hi].iter_mut().for_each(|o| *o *= inv);
            }
        });
    y
}

/// [`super::silu_mul`].
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.len()];
    y.par_chunks_mut(GRAIN)
        .zip(g.par_chunks(GRAIN).zip(u.par_chunks(GRAIN)))
        .for_each(|(ys, (gs, us))| {
            for ((o, a), b) in ys.iter_mut().zip(gs).zip(us) {
                *o = a / (1.0 + (-a).exp()) * b;
            }
        });
    y
}

/// `[r; h]` for rows of `cols`: r = round(x + y), h = r · rsqrt(mean(r²) + eps) · w.
pub fn add_rms_norm(
    eps: f32,
    (x, y, w): (&[f32], &[f32], &[f32]),
    cols: usize,
    round: fn(f32) -> f32,
) -> Vec<f32> {
    let mut out = vec![0f32; 2 * x.len()];
    let (r, h) = out.split_at_mut(x.len());
    let step = cols * rows_per_task(cols);
    r.par_chunks_mut(step)
        .zip(h.par_chunks_mut(step))
        .zip(x.par_chunks(step).zip(y.par_chunks(step)))
        .for_each(|((rs, hs), (xs, ys))| {
            for (((rr, hr), xr), yr) in rs
                .chunks_mut(cols)
                .zip(hs.chunks_mut(cols))
                .zip(xs.chunks(cols))
                .zip(ys.chunks(cols))
            {
                for ((o, a), b) in rr.iter_mut().zip(xr).zip(yr) {
                    *o = round(a + b);
                }
                let ss: f32 = rr.iter().map(|v| v * v).sum();
                let inv = 1.0 / (ss / cols as f32 + eps).sqrt();
                for ((o, v), g) in hr.iter_mut().zip(rr.iter()).zip(w) {
                    *o = v * inv * g;
                }
            }
        });
    out
}

/// `[a, b, c, d]` to `[a, c, b, d]`.
pub fn swap12(x: &[f32], [_, b, c, d]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let block = b * d; // one (ai, ci) of the output
    if block == 0 {
        return y;
    }
    y.par_chunks_mut(block)
        .with_min_len(rows_per_task(block))
        .enumerate()
        .for_each(|(i, out)| {
            let (ai, ci) = (i / c, i % c);
            for (bi, o) in out.chunks_mut(d).enumerate() {
                let at = ((ai * b + bi) * c + ci) * d;
                o.copy_from_slice(&x[at..at + d]);
            }
        });
    y
}

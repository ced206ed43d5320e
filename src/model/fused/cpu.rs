//! The fused ops on the CPU, in f32 (bf16 and f16 convert exactly to f32), with the
//! kernels' arithmetic: results are rounded once to the inputs' dtype, and where a kernel
//! rounds an intermediate (the residual of add + RMSNorm) so does this.

use std::ops::Range;

use candle_core::{CpuStorage, DType};
use half::{bf16, f16};

use super::CausalSoftmax;

/// The float elements of `s` in `span`, as f32.
pub fn floats(s: &CpuStorage, span: Range<usize>) -> candle_core::Result<Vec<f32>> {
    Ok(match s {
        CpuStorage::F32(x) => x[span].to_vec(),
        CpuStorage::BF16(x) => x[span].iter().map(|v| v.to_f32()).collect(),
        CpuStorage::F16(x) => x[span].iter().map(|v| v.to_f32()).collect(),
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
    for (r, (xr, yr)) in x.chunks(total).zip(y.chunks_mut(total)).enumerate() {
        let (lo, hi) = op.visible(r);
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
    y
}

/// [`super::silu_mul`].
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
        .collect()
}

/// `[r; h]` for rows of `cols`: r = round(x + y), h = r · rsqrt(mean(r²) + eps) · w.
pub fn add_rms_norm(
    eps: f32,
    (x, y, w): (&[f32], &[f32], &[f32]),
    cols: usize,
    round: fn(f32) -> f32,
) -> Vec<f32> {
    let r: Vec<f32> = x.iter().zip(y).map(|(a, b)| round(a + b)).collect();
    let mut h = Vec::with_capacity(r.len());
    for row in r.chunks(cols) {
        let ss: f32 = row.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / cols as f32 + eps).sqrt();
        h.extend(row.iter().zip(w).map(|(v, g)| v * inv * g));
    }
    [r, h].concat()
}

/// `[a, b, c, d]` to `[a, c, b, d]`.
pub fn swap12(x: &[f32], [a, b, c, d]: [usize; 4]) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for ai in 0..a {
        for ci in 0..c {
            for bi in 0..b {
                let at = ((ai * b + bi) * c + ci) * d;
                y.extend_from_slice(&x[at..at + d]);
            }
        }
    }
    y
}

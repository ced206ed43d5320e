//! `x Wᵀ` for a few rows of `x` on the CPU: the projections of a decode step.
//!
//! A general GEMM packs the weight into panels on every call; with a handful of rows
//! (one per decoding sequence) that packing reads and writes the whole weight once more
//! per step and costs as much as the product. Here each weight row is read once, where
//! it lies, and dotted with every row of `x` (four at a time, so one load of the weight
//! feeds four fused multiply-adds); `x` stays in cache. Inference only.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::Result;

/// The rows of `x` this path takes: past them the GEMM's packing pays for itself, and
/// for one row the GEMM's own matrix-vector path is as fast (`bench_engine` with
/// BENCH_PROJECTIONS measures both on the decoder's shapes).
pub const ROWS: std::ops::RangeInclusive<usize> = 2..=8;

/// Weight rows per parallel task.
const BLOCK: usize = 64;

/// `x` `[m, in]` times `w` `[out, in]` transposed, when this path applies (f32 on the
/// CPU, `m` in [`ROWS`], a contiguous weight); `None` otherwise.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let applies = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2
        && ROWS.contains(&x.dims()[0])
        && x.dims()[1] == w.dims()[1]
        && w.is_contiguous();
    if !applies {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let out = w.dims()[0];
    let xs: Vec<f32> = x.contiguous()?.flatten_all()?.to_vec1()?;
    let (storage, layout) = w.storage_and_layout();
    let ws = match &*storage {
        Storage::Cpu(c) => &c.as_slice::<f32>()?[layout.start_offset()..][..out * k],
        _ => return Ok(None),
    };
    // Output transposed ([out, m]) so that each task owns a contiguous block.
    let mut yt = vec![0f32; out * m];
    yt.par_chunks_mut(BLOCK * m)
        .zip(ws.par_chunks(BLOCK * k))
        .for_each(|(y, w)| {
            for (yo, wo) in y.chunks_mut(m).zip(w.chunks(k)) {
                row_times_x(wo, &xs, k, yo);
            }
        });
    let mut y = vec![0f32; m * out];
    for (o, col) in yt.chunks(m).enumerate() {
        for (r, v) in col.iter().enumerate() {
            y[r * out + o] = *v;
        }
    }
    Ok(Some(Tensor::from_vec(y, (m, out), x.device())?))
}

/// `y[r] = x[r] · w` for every row `r` of `x` (`k` columns).
fn row_times_x(w: &[f32], x: &[f32], k: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { avx2::row_times_x(w, x, k, y) };
        return;
    }
    for (r, yr) in y.iter_mut().enumerate() {
        *yr = dot(w, &x[r * k..(r + 1) * k]);
    }
}

/// Dot product with eight partial sums, so the loop vectorises.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// [`super::row_times_x`] with 256-bit fused multiply-adds: four rows of `x` per
    /// pass over `w`, two 8-wide steps of each in flight (eight independent sums, held
    /// in registers: the four rows are named, not indexed).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row_times_x(w: &[f32], x: &[f32], k: usize, y: &mut [f32]) {
        let m = y.len();
        let body = k - k % 16;
        let wp = w.as_ptr();
        let mut r = 0;
        while r + 4 <= m {
            let (x0, x1, x2, x3) = (
                x.as_ptr().add(r * k),
                x.as_ptr().add((r + 1) * k),
                x.as_ptr().add((r + 2) * k),
                x.as_ptr().add((r + 3) * k),
            );
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let (mut b0, mut b1, mut b2, mut b3) = (a0, a1, a2, a3);
            let mut i = 0;
            while i < body {
                let wa = _mm256_loadu_ps(wp.add(i));
                let wb = _mm256_loadu_ps(wp.add(i + 8));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0.add(i)), wa, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1.add(i)), wa, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2.add(i)), wa, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3.add(i)), wa, a3);
                b0 = _mm256_fmadd_ps(_mm256_loadu_ps(x0.add(i + 8)), wb, b0);
                b1 = _mm256_fmadd_ps(_mm256_loadu_ps(x1.add(i + 8)), wb, b1);
                b2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2.add(i + 8)), wb, b2);
                b3 = _mm256_fmadd_ps(_mm256_loadu_ps(x3.add(i + 8)), wb, b3);
                i += 16;
            }
            for (j, (a, b)) in [(a0, b0), (a1, b1), (a2, b2), (a3, b3)]
                .into_iter()
                .enumerate()
            {
                let xr = &x[(r + j) * k..(r + j + 1) * k];
                let tail: f32 = (body..k).map(|t| xr[t] * w[t]).sum();
                y[r + j] = hsum(_mm256_add_ps(a, b)) + tail;
            }
            r += 4;
        }
        for (j, yr) in y.iter_mut().enumerate().skip(r) {
            *yr = dot(w, &x[j * k..(j + 1) * k]);
        }
    }

    /// One row: four 8-wide sums in flight.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(w: &[f32], x: &[f32]) -> f32 {
        let k = w.len();
        let body = k - k % 32;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(xp.add(i)),
                _mm256_loadu_ps(wp.add(i)),
                acc[0],
            );
            acc[1] = _mm256_fmadd_ps(
                _mm256_loadu_ps(xp.add(i + 8)),
                _mm256_loadu_ps(wp.add(i + 8)),
                acc[1],
            );
            acc[2] = _mm256_fmadd_ps(
                _mm256_loadu_ps(xp.add(i + 16)),
                _mm256_loadu_ps(wp.add(i + 16)),
                acc[2],
            );
            acc[3] = _mm256_fmadd_ps(
                _mm256_loadu_ps(xp.add(i + 24)),
                _mm256_loadu_ps(wp.add(i + 24)),
                acc[3],
            );
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + (body..k).map(|t| x[t] * w[t]).sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_gemm_for_every_row_count_and_width() {
        let dev = Device::Cpu;
        for (m, k, out) in [(2, 576, 192), (3, 13, 70), (5, 100, 33), (8, 64, 129)] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (out, k), &dev).unwrap();
            let got = matmul_t(&x, &w).unwrap().expect("applies");
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 2e-5 * k as f32, "{m}x{k}x{out}: {diff}");
        }
        let w = Tensor::zeros((4, 8), DType::F32, &dev).unwrap();
        for m in [1, ROWS.end() + 1] {
            let x = Tensor::zeros((m, 8), DType::F32, &dev).unwrap();
            assert!(
                matmul_t(&x, &w).unwrap().is_none(),
                "{m} rows take the GEMM"
            );
        }
    }
}

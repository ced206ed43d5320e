//! Decode attention on the CPU: one new token for each of many sequences, each over
//! its own cache, in one pass.
//!
//! Run as tensor ops, a decode step costs about a dozen small ops per sequence and
//! layer (transposes, two products, scale, softmax), each with its own allocation and
//! thread-pool round trip; at batch 32 those dominate the step, not the arithmetic.
//! Here every (sequence, query head) is one task over the cache rows where they lie:
//! scores, an f32 softmax and the weighted sum of values, with no copy of the cache.
//! The math is [`super::attention::attend`]'s (scores scaled after the product,
//! softmax in f32), so the two agree to float rounding (the test holds them to it).

use std::ops::Range;

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::skinny::dot;
use super::{ModelError, Result};

/// True when [`attend_decode`] can run these tensors: f32 on the CPU.
pub fn supported(q: &Tensor) -> bool {
    q.device().is_cpu() && q.dtype() == DType::F32
}

/// `q` `[n_seqs, hq, d]` (one new token per sequence) over each sequence's keys and
/// values `[len_i, hkv, d]` (the new token's included), keeping the last `window`
/// positions when there is one. Returns `[n_seqs, hq * d]`.
pub fn attend_decode(q: &Tensor, kv: &[(Tensor, Tensor)], window: Option<usize>) -> Result<Tensor> {
    attend_decode_with(q, kv, window, Simd::detect())
}

fn attend_decode_with(
    q: &Tensor,
    kv: &[(Tensor, Tensor)],
    window: Option<usize>,
    simd: Simd,
) -> Result<Tensor> {
    let (n_seqs, hq, d) = q.dims3()?;
    if kv.len() != n_seqs {
        return Err(ModelError::Input(format!(
            "decode attention: {n_seqs} queries but {} caches",
            kv.len()
        )));
    }
    let q = q.contiguous()?;
    let q_vals: Vec<f32> = q.flatten_all()?.to_vec1()?;
    // Contiguous caches, read in place (a view's rows are where the buffer has them).
    let kv: Vec<(Tensor, Tensor)> = kv
        .iter()
        .map(|(k, v)| Ok((k.contiguous()?, v.contiguous()?)))
        .collect::<Result<_>>()?;
    let hkv = kv.first().map_or(1, |(k, _)| k.dims()[1]);
    if d == 0 || hkv == 0 || hq % hkv != 0 {
        return Err(ModelError::Input(format!(
            "decode attention: {hq} query heads over {hkv} key/value heads"
        )));
    }
    let guards: Vec<_> = kv
        .iter()
        .map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout()))
        .collect();
    let mut rows: Vec<(&[f32], &[f32], usize)> = Vec::with_capacity(n_seqs);
    for (((ks, kl), (vs, vl)), (k, _)) in guards.iter().zip(&kv) {
        let (len, h, dk) = k.dims3()?;
        if h != hkv || dk != d {
            return Err(ModelError::Input(format!(
                "decode attention: a cache of shape {:?} for heads {hkv} x {d}",
                k.dims()
            )));
        }
        let n = len * hkv * d;
        rows.push((
            cpu_rows(ks, kl.start_offset(), n)?,
            cpu_rows(vs, vl.start_offset(), n)?,
            len,
        ));
    }
    let groups = hq / hkv;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; n_seqs * hq * d];
    // One task per (sequence, key/value head): the query heads of its group are
    // consecutive, so their outputs are one contiguous chunk, and each cache row is
    // read once for all of them.
    out.par_chunks_mut(groups * d)
        .enumerate()
        .for_each(|(task, o)| {
            let (seq, kvh) = (task / hkv, task % hkv);
            let (keys, values, len) = rows[seq];
            let first = window.map_or(0, |w| len.saturating_sub(w));
            let q = &q_vals[task * groups * d..(task + 1) * groups * d];
            let cache = Cache {
                keys,
                values,
                stride: hkv * d,
                offset: kvh * d,
                d,
            };
            attend_group(q, &cache, first..len, scale, o, simd);
        });
    Ok(Tensor::from_vec(out, (n_seqs, hq * d), q.device())?)
}

/// One sequence's cache rows of one key/value head: row `t` of the keys is
/// `keys[t * stride + offset..][..d]`.
struct Cache<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    stride: usize,
    offset: usize,
    d: usize,
}

/// Which inner loops run: AVX2 + FMA where the CPU has them, else portable loops
/// (the same sums, rounded without fused multiply-adds).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Simd {
    Avx2,
    Portable,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2;
        }
        Self::Portable
    }
}

/// One (sequence, key/value head) task with the loops `simd` selects.
fn attend_group(
    q: &[f32],
    cache: &Cache,
    span: Range<usize>,
    scale: f32,
    o: &mut [f32],
    simd: Simd,
) {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 {
        // SAFETY: `Avx2` is only chosen when the CPU has AVX2 and FMA.
        return unsafe { avx2::attend_group(q, cache, span, scale, o) };
    }
    group_with::<Portable>(q, cache, span, scale, o)
}

/// The two inner loops of decode attention.
trait Lanes {
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `o += w * v`.
    fn axpy(w: f32, v: &[f32], o: &mut [f32]);
}

struct Portable;

impl Lanes for Portable {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }

    fn axpy(w: f32, v: &[f32], o: &mut [f32]) {
        for (o, v) in o.iter_mut().zip(v) {
            *o += w * v;
        }
    }
}

/// The query heads `q` (`[groups, d]`) of one key/value head over the cache positions
/// `span`: scores, an f32 softmax per head, the weighted sum of values into `o`.
/// Inlined into its caller, so that under AVX2 the loops are compiled for it.
#[inline(always)]
fn group_with<L: Lanes>(q: &[f32], cache: &Cache, span: Range<usize>, scale: f32, o: &mut [f32]) {
    let d = cache.d;
    let groups = q.len() / d;
    let n = span.len();
    if n == 0 {
        return;
    }
    let row = |t: usize| cache.offset + t * cache.stride;
    // scores[g * n + i]: head g at position span.start + i.
    let mut scores = vec![0f32; groups * n];
    for (i, t) in span.clone().enumerate() {
        let k = &cache.keys[row(t)..row(t) + d];
        for (g, qh) in q.chunks_exact(d).enumerate() {
            scores[g * n + i] = L::dot(qh, k) * scale;
        }
    }
    let mut inv = vec![0f32; groups];
    for (g, s) in scores.chunks_mut(n).enumerate() {
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        inv[g] = 1.0 / sum;
    }
    for (i, t) in span.enumerate() {
        let v = &cache.values[row(t)..row(t) + d];
        for (g, og) in o.chunks_exact_mut(d).enumerate() {
            L::axpy(scores[g * n + i] * inv[g], v, og);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use crate::decode_attention::{group_with, Cache, Lanes};

    /// [`crate::decode_attention::attend_group`] compiled for AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend_group(
        q: &[f32],
        cache: &Cache,
        span: Range<usize>,
        scale: f32,
        o: &mut [f32],
    ) {
        group_with::<Avx2>(q, cache, span, scale, o)
    }

    struct Avx2;

    impl Lanes for Avx2 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: only reached through `attend_group` above, which requires AVX2 + FMA.
            unsafe { dot(a, b) }
        }

        #[inline(always)]
        fn axpy(w: f32, v: &[f32], o: &mut [f32]) {
            // SAFETY: as in `dot`.
            unsafe { axpy(w, v, o) }
        }
    }

    /// `a · b` with two 8-wide fused multiply-add chains.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let body = n - n % 16;
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i < body {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i + 8)),
                _mm256_loadu_ps(bp.add(i + 8)),
                s1,
            );
            i += 16;
        }
        let v = _mm256_add_ps(s0, s1);
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        _mm_cvtss_f32(h) + (body..n).map(|t| a[t] * b[t]).sum::<f32>()
    }

    /// `o += w * v`, eight lanes per fused multiply-add.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn axpy(w: f32, v: &[f32], o: &mut [f32]) {
        let n = v.len().min(o.len());
        let body = n - n % 8;
        let (vp, op) = (v.as_ptr(), o.as_mut_ptr());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i < body {
            let r = _mm256_fmadd_ps(wv, _mm256_loadu_ps(vp.add(i)), _mm256_loadu_ps(op.add(i)));
            _mm256_storeu_ps(op.add(i), r);
            i += 8;
        }
        for t in body..n {
            o[t] += w * v[t];
        }
    }
}

/// The `n` values of a CPU tensor's storage from `start`.
fn cpu_rows(s: &Storage, start: usize, n: usize) -> Result<&[f32]> {
    match s {
        Storage::Cpu(c) => Ok(&c.as_slice::<f32>()?[start..start + n]),
        _ => Err(ModelError::Input("decode attention runs on the CPU".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::attend;
    use crate::ops::Pass;
    use crate::random::seeded_randn;
    use candle_core::Device;

    #[test]
    fn matches_the_tensor_op_attention_per_sequence() {
        let dev = Device::Cpu;
        // A head size with a tail past the 16-wide loops, and SmolLM2's (64, 9 over 3).
        for (hq, hkv, d) in [(6, 2, 20), (9, 3, 64)] {
            let lens = [1usize, 7, 33, 300];
            let q = seeded_randn(1, 0., 1., (lens.len(), hq, d), &dev).unwrap();
            let kv: Vec<(Tensor, Tensor)> = lens
                .iter()
                .enumerate()
                .map(|(i, &l)| {
                    (
                        seeded_randn(10 + i as u64, 0., 1., (l, hkv, d), &dev).unwrap(),
                        seeded_randn(20 + i as u64, 0., 1., (l, hkv, d), &dev).unwrap(),
                    )
                })
                .collect();
            for (window, simd) in [None, Some(5)]
                .into_iter()
                .flat_map(|w| [(w, Simd::detect()), (w, Simd::Portable)])
            {
                let got = attend_decode_with(&q, &kv, window, simd).unwrap();
                assert_eq!(got.dims(), [lens.len(), hq * d]);
                for (i, (k, v)) in kv.iter().enumerate() {
                    let keep = window.map_or(lens[i], |w| w.min(lens[i]));
                    let (k, v) = (
                        k.narrow(0, lens[i] - keep, keep).unwrap(),
                        v.narrow(0, lens[i] - keep, keep).unwrap(),
                    );
                    let want = attend(&q.narrow(0, i, 1).unwrap(), &k, &v, None, Pass::Inference)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    let row = got.get(i).unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(row.len(), want.len());
                    let diff = row
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        diff < 1e-5,
                        "heads {hq}/{hkv}x{d}, sequence {i}, window {window:?}, {simd:?}: {diff}"
                    );
                }
            }
        }
    }
}

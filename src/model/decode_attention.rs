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
    if hq % hkv != 0 {
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
    out.par_chunks_mut(d).enumerate().for_each(|(task, o)| {
        let (seq, head) = (task / hq, task % hq);
        let (keys, values, len) = rows[seq];
        let kvh = head / groups;
        let qh = &q_vals[task * d..(task + 1) * d];
        let first = window.map_or(0, |w| len.saturating_sub(w));
        let row = |t: usize| (t * hkv + kvh) * d;
        let mut scores: Vec<f32> = (first..len)
            .map(|t| dot(qh, &keys[row(t)..row(t) + d]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (t, p) in (first..len).zip(&scores) {
            let w = p / sum;
            for (o, v) in o.iter_mut().zip(&values[row(t)..row(t) + d]) {
                *o += w * v;
            }
        }
    });
    Ok(Tensor::from_vec(out, (n_seqs, hq * d), q.device())?)
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
    use crate::Pass;
    use candle_core::Device;

    #[test]
    fn matches_the_tensor_op_attention_per_sequence() {
        let dev = Device::Cpu;
        let (hq, hkv, d) = (6, 2, 20);
        let lens = [1usize, 7, 33];
        let q = Tensor::randn(0f32, 1., (lens.len(), hq, d), &dev).unwrap();
        let kv: Vec<(Tensor, Tensor)> = lens
            .iter()
            .map(|&l| {
                (
                    Tensor::randn(0f32, 1., (l, hkv, d), &dev).unwrap(),
                    Tensor::randn(0f32, 1., (l, hkv, d), &dev).unwrap(),
                )
            })
            .collect();
        for window in [None, Some(5)] {
            let got = attend_decode(&q, &kv, window).unwrap();
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
                let diff = row
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "sequence {i}, window {window:?}: {diff}");
            }
        }
    }
}

//! Causal grouped-query attention over the sequences of a packed batch.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::batch::PackedBatch;
use super::flash::VarlenLens;
use super::kv::KvCache;
use super::ops::{softmax_differentiable, Pass};

mod sequence;

use super::{ModelError, Result};
pub use sequence::{attend, attend_fused};

/// Additive mask `[n, past + n]`: new token j (absolute position past + j) sees key
/// position p when p <= past + j and, with a sliding window w, past + j - p < w.
/// `None` when nothing is masked (a single new token without window limits).
fn causal_mask(
    n: usize,
    past: usize,
    window: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> Result<Option<Tensor>> {
    let total = past + n;
    let limited = window.is_some_and(|w| total > w);
    if n == 1 && !limited {
        return Ok(None);
    }
    let mut m = vec![0f32; n * total];
    for j in 0..n {
        let qp = past + j;
        for (p, slot) in m[j * total..(j + 1) * total].iter_mut().enumerate() {
            let visible = p <= qp && window.is_none_or(|w| qp - p < w);
            if !visible {
                *slot = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (n, total), dev)?.to_dtype(dtype)?))
}

/// The masks of one forward pass, built once per (new tokens, cached tokens, window) and
/// shared by every layer (on a GPU this saves a host-to-device copy per layer).
pub struct Masks {
    dtype: DType,
    device: Device,
    built: HashMap<(usize, usize, Option<usize>), Option<Tensor>>,
}

impl Masks {
    /// An empty set of masks in `dtype` on `device`.
    pub fn new(dtype: DType, device: &Device) -> Self {
        Self {
            dtype,
            device: device.clone(),
            built: HashMap::new(),
        }
    }

    /// The mask of `n` new tokens after `past` cached ones (see [`causal_mask`]).
    pub fn get(&mut self, n: usize, past: usize, window: Option<usize>) -> Result<Option<Tensor>> {
        if let Some(m) = self.built.get(&(n, past, window)) {
            return Ok(m.clone());
        }
        let m = causal_mask(n, past, window, self.dtype, &self.device)?;
        self.built.insert((n, past, window), m.clone());
        Ok(m)
    }
}

/// The accelerator path: `b` sequences of equal shape at once, `q` `[b, n, hq, d]`
/// over `k`, `v` `[b, past + n, hkv, d]`, every sequence under the causal mask of `n`
/// new tokens after `past` cached ones (and `window`); one batched product per step
/// instead of one per sequence. With `fused` (inference only) the scale, mask and f32
/// softmax are one kernel over the scores ([`super::fused::causal_softmax`]);
/// otherwise queries are scaled before the product, the additive mask comes from
/// `masks` and the softmax runs in f32 (the composed, differentiable form).
/// Returns `[b * n, hq * d]`.
pub fn attend_batched(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (past, window): (usize, Option<usize>),
    masks: &mut Masks,
    pass: Pass,
    fused: bool,
) -> Result<Tensor> {
    let (b, n, hq, d) = q.dims4()?;
    let (_, total, hkv, _) = k.dims4()?;
    let groups = hq / hkv;
    let scale = 1.0 / (d as f64).sqrt();
    let fused = fused && !pass.differentiable() && super::fused::supported(q.dtype());
    let q = if fused { q.clone() } else { (q * scale)? };
    // [b, tokens, heads, d] <-> [b, heads, tokens, d], contiguous.
    let heads_first = |x: &Tensor| -> Result<Tensor> {
        if fused {
            super::fused::swap12(x)
        } else {
            Ok(x.permute((0, 2, 1, 3))?.contiguous()?)
        }
    };
    // [b, n, hq, d] -> [b * hkv, groups * n, d].
    let qg = heads_first(&q)?.reshape((b * hkv, groups * n, d))?;
    let kt = heads_first(k)?.reshape((b * hkv, total, d))?;
    let vt = heads_first(v)?.reshape((b * hkv, total, d))?;
    let scores = qg.matmul(&kt.t()?)?; // [b*hkv, groups*n, total]
    let probs = if fused {
        let grouped = scores.reshape((b * hkv, groups, n, total))?;
        super::fused::causal_softmax(&grouped, past, window, scale)?.reshape((
            b * hkv,
            groups * n,
            total,
        ))?
    } else {
        let scores = match masks.get(n, past, window)? {
            Some(mask) => scores
                .reshape((b * hkv, groups, n, total))?
                .broadcast_add(&mask)?
                .reshape((b * hkv, groups * n, total))?,
            None => scores,
        };
        let s32 = scores.to_dtype(DType::F32)?;
        match pass.differentiable() {
            false => candle_nn::ops::softmax_last_dim(&s32)?,
            true => softmax_differentiable(&s32)?,
        }
        .to_dtype(scores.dtype())?
    };
    let out = probs.matmul(&vt)?; // [b*hkv, groups*n, d]
    Ok(heads_first(&out.reshape((b, hq, n, d))?)?.reshape((b * n, hq * d))?)
}

/// How attention runs over the sequences of a packed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// One sequence at a time ([`attend`]): the CPU default.
    PerSequence,
    /// Runs of equal-length sequences in one batched product ([`attend_batched`]): the
    /// accelerator default without flash-attn.
    Batched,
    /// The whole packed batch in one variable-length flash-attention v2 call over its
    /// `cu_seqlens` (feature `flash-attn`, CUDA, bf16/f16): no padding, no mask tensors.
    /// Inference only (the kernel has no backward); training falls back to `Batched`.
    Flash,
}

impl AttentionPath {
    /// The fastest path available for `dtype` on `device` with heads of `head_dim`.
    pub fn default_for(device: &Device, dtype: DType, head_dim: usize) -> Self {
        if device.is_cpu() {
            AttentionPath::PerSequence
        } else if super::flash::available(device, dtype, head_dim) {
            AttentionPath::Flash
        } else {
            AttentionPath::Batched
        }
    }
}

impl std::str::FromStr for AttentionPath {
    type Err = ModelError;

    /// `per-sequence`, `batched` or `flash`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "per-sequence" => Ok(AttentionPath::PerSequence),
            "batched" => Ok(AttentionPath::Batched),
            "flash" => Ok(AttentionPath::Flash),
            other => Err(ModelError::Config(format!(
                "unknown attention path `{other}` (per-sequence, batched, flash)"
            ))),
        }
    }
}

/// The attention settings of a decoder, as one layer's attention needs them.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttentionOps {
    pub path: AttentionPath,
    pub pass: Pass,
    /// The fused ops of [`super::fused`] (inference only): the scale, mask and softmax
    /// pass on every path, the head transposes on the batched one.
    pub fused: bool,
}

/// What every layer's attention needs to know about the batch of one forward pass.
pub(super) struct BatchPlan<'a> {
    pub batch: &'a PackedBatch,
    /// Cached positions per sequence.
    pub past: &'a [usize],
    /// Runs of equal-length sequences, for the batched path.
    pub runs: Vec<(usize, usize)>,
    pub masks: Masks,
    /// Sequence boundaries on the device, when the flash path runs.
    pub flash: Option<VarlenLens>,
}

/// One layer's attention over the packed batch, `[t, hq * d]`, by the path in use
/// (in a training pass `Flash` runs as `Batched`). With `caches`, each
/// sequence's new keys/values are appended first.
pub(super) fn attend_layer(
    ops: AttentionOps,
    li: usize,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    window: Option<usize>,
    plan: &mut BatchPlan,
    mut caches: Option<&mut [KvCache]>,
) -> Result<Tensor> {
    let batch = plan.batch;
    let n_seqs = batch.num_seqs();
    let hd = q.dim(2)?;
    let (hq, hkv) = (q.dim(1)?, k.dim(1)?);
    if let Some(lens) = &plan.flash {
        let (kf, vf) = match caches {
            None => (k.clone(), v.clone()),
            Some(c) => {
                let (mut ks, mut vs) = (Vec::with_capacity(n_seqs), Vec::with_capacity(n_seqs));
                for (i, cache) in c.iter_mut().enumerate() {
                    let (start, n) = (batch.cu_seqlens[i], batch.seq_len(i));
                    let (kf, vf) =
                        cache.append(li, &k.narrow(0, start, n)?, &v.narrow(0, start, n)?)?;
                    ks.push(kf);
                    vs.push(vf);
                }
                (Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?)
            }
        };
        return super::flash::attend_varlen(q, &kf, &vf, lens, window);
    }
    let batched = ops.path != AttentionPath::PerSequence;
    // A decode step on the CPU: every sequence has one new token; all of them in one
    // pass over their caches (see `decode_attention`).
    if let Some(c) = caches.as_deref_mut() {
        let decode = !batched
            && !ops.pass.differentiable()
            && n_seqs > 0
            && (0..n_seqs).all(|i| batch.seq_len(i) == 1)
            && super::decode_attention::supported(q);
        if decode {
            let mut kv = Vec::with_capacity(n_seqs);
            for (i, cache) in c.iter_mut().enumerate() {
                kv.push(cache.append(li, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?);
            }
            return super::decode_attention::attend_decode(q, &kv, window);
        }
    }
    let mut outs = Vec::with_capacity(n_seqs);
    if batched && caches.is_none() {
        // No caches: runs of equal-length sequences in one batch.
        for &(first, count) in &plan.runs {
            let (start, n) = (batch.cu_seqlens[first], batch.seq_len(first));
            let rows = |x: &Tensor, heads: usize| {
                x.narrow(0, start, count * n)?
                    .reshape((count, n, heads, hd))
            };
            outs.push(attend_batched(
                &rows(q, hq)?,
                &rows(k, hkv)?,
                &rows(v, hkv)?,
                (0, window),
                &mut plan.masks,
                ops.pass,
                ops.fused,
            )?);
        }
    } else {
        for i in 0..n_seqs {
            let (start, n) = (batch.cu_seqlens[i], batch.seq_len(i));
            let qi = q.narrow(0, start, n)?;
            let ki = k.narrow(0, start, n)?;
            let vi = v.narrow(0, start, n)?;
            let (kf, vf) = match caches.as_deref_mut() {
                Some(c) => c[i].append(li, &ki, &vi)?,
                None => (ki, vi),
            };
            outs.push(if !batched {
                let fused =
                    ops.fused && !ops.pass.differentiable() && super::fused::supported(qi.dtype());
                if fused {
                    attend_fused(&qi, &kf, &vf, (plan.past[i], window))?
                } else if ops.pass.differentiable() {
                    let mask = plan.masks.get(n, plan.past[i], window)?;
                    super::autograd::attention(&qi, &kf, &vf, mask.as_ref())?
                } else {
                    let mask = plan.masks.get(n, plan.past[i], window)?;
                    attend(&qi, &kf, &vf, mask.as_ref(), ops.pass)?
                }
            } else {
                attend_batched(
                    &qi.unsqueeze(0)?,
                    &kf.unsqueeze(0)?,
                    &vf.unsqueeze(0)?,
                    (plan.past[i], window),
                    &mut plan.masks,
                    ops.pass,
                    ops.fused,
                )?
            });
        }
    }
    Ok(if outs.len() == 1 {
        outs.pop().expect("one output")
    } else {
        Tensor::cat(&outs, 0)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain per-head reference with explicit loops.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n: usize,
        hq: usize,
        hkv: usize,
        d: usize,
    ) -> Vec<f32> {
        let total = n;
        let g = hq / hkv;
        let mut out = vec![0f32; n * hq * d];
        for h in 0..hq {
            let kh = h / g;
            for i in 0..n {
                let mut s: Vec<f32> = (0..total)
                    .map(|j| {
                        (0..d)
                            .map(|x| q[(i * hq + h) * d + x] * k[(j * hkv + kh) * d + x])
                            .sum::<f32>()
                            / (d as f32).sqrt()
                    })
                    .collect();
                for (j, sj) in s.iter_mut().enumerate() {
                    if j > i {
                        *sj = f32::NEG_INFINITY;
                    }
                }
                let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for x in 0..d {
                    out[(i * hq + h) * d + x] = (0..total)
                        .map(|j| e[j] / z * v[(j * hkv + kh) * d + x])
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn grouped_attention_matches_loops() {
        let dev = Device::Cpu;
        let (n, hq, hkv, d) = (5, 4, 2, 3);
        let q = crate::seeded_randn(1, 0.0, 1.0, (n, hq, d), &dev).unwrap();
        let k = crate::seeded_randn(2, 0.0, 1.0, (n, hkv, d), &dev).unwrap();
        let v = crate::seeded_randn(3, 0.0, 1.0, (n, hkv, d), &dev).unwrap();
        let want = reference(
            &q.flatten_all().unwrap().to_vec1().unwrap(),
            &k.flatten_all().unwrap().to_vec1().unwrap(),
            &v.flatten_all().unwrap().to_vec1().unwrap(),
            n,
            hq,
            hkv,
            d,
        );
        for pass in [Pass::Inference, Pass::TRAIN] {
            let mask = Masks::new(DType::F32, &dev).get(n, 0, None).unwrap();
            let got: Vec<f32> = attend(&q, &k, &v, mask.as_ref(), pass)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn batched_attention_matches_one_sequence_at_a_time() {
        let dev = Device::Cpu;
        let (b, n, past, hq, hkv, d) = (3, 5, 2, 4, 2, 8);
        let q = crate::seeded_randn(4, 0.0, 1.0, (b, n, hq, d), &dev).unwrap();
        let k = crate::seeded_randn(5, 0.0, 1.0, (b, past + n, hkv, d), &dev).unwrap();
        let v = crate::seeded_randn(6, 0.0, 1.0, (b, past + n, hkv, d), &dev).unwrap();
        let mut masks = Masks::new(DType::F32, &dev);
        let mask = masks.get(n, past, Some(4)).unwrap();
        // Fused kernels on and off, and the differentiable form.
        for (pass, fused) in [
            (Pass::Inference, true),
            (Pass::Inference, false),
            (Pass::TRAIN, true),
        ] {
            let got = attend_batched(&q, &k, &v, (past, Some(4)), &mut masks, pass, fused).unwrap();
            for i in 0..b {
                let want = attend(
                    &q.get(i).unwrap(),
                    &k.get(i).unwrap(),
                    &v.get(i).unwrap(),
                    mask.as_ref(),
                    pass,
                )
                .unwrap();
                let diff = (got.narrow(0, i * n, n).unwrap() - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "sequence {i}: {diff}");
            }
        }
    }

    #[test]
    fn sliding_window_masks_old_keys() {
        let m = causal_mask(2, 3, Some(2), DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
        // query position 3 sees 2..=3, position 4 sees 3..=4.
        assert!(m[0][1].is_infinite() && m[0][2] == 0.0 && m[0][3] == 0.0 && m[0][4].is_infinite());
        assert!(m[1][2].is_infinite() && m[1][3] == 0.0 && m[1][4] == 0.0);
    }
}

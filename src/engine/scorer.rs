//! Direct execution of judge prompts: packed forward passes bounded by a token budget,
//! softmax over the whole vocabulary at each last position.

use candle_core::{DType, Tensor};

use super::prefix::{PrefillStats, PrefixScorer};
use crate::judge::{JudgeError, OrderProbs, Scorer};
use crate::model::{Decoder, ModelError, PackedBatch};

/// P(`token_a`) and P(`token_b`) under the softmax of `logits` (f64 accumulation).
pub fn ab_probs(logits: &[f32], token_a: u32, token_b: u32) -> OrderProbs {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let p = |t: u32| (logits[t as usize] as f64 - max).exp() / z;
    OrderProbs {
        p_a: p(token_a),
        p_b: p(token_b),
    }
}

/// P(`token_a`), P(`token_b`) for every row of `[n, vocab]` last-position logits. On
/// the CPU each row comes to the host and [`ab_probs`] takes the softmax in f64; on an
/// accelerator the softmax runs there in f32 and only the two columns come back.
pub fn ab_probs_rows(
    logits: &Tensor,
    token_a: u32,
    token_b: u32,
) -> Result<Vec<OrderProbs>, ModelError> {
    if logits.device().is_cpu() {
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        return Ok(rows.iter().map(|l| ab_probs(l, token_a, token_b)).collect());
    }
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let ids = Tensor::new(&[token_a, token_b], logits.device())?;
    let ab: Vec<Vec<f32>> = probs.index_select(&ids, 1)?.to_vec2()?;
    Ok(ab
        .iter()
        .map(|r| OrderProbs {
            p_a: f64::from(r[0]),
            p_b: f64::from(r[1]),
        })
        .collect())
}

/// Runs prompts on a decoder in packed batches of at most `max_batch_tokens` tokens,
/// every prompt computed in full (the reference path for [`CachedScorer`]).
pub struct DirectScorer<'m> {
    pub decoder: &'m Decoder,
    pub token_ids: (u32, u32),
    pub max_batch_tokens: usize,
}

/// Splits prompts into consecutive groups whose token total stays within `budget`
/// (a prompt longer than the budget forms a group of its own).
pub fn chunk_by_tokens<S: AsRef<[u32]>>(
    prompts: &[S],
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, p) in prompts.iter().enumerate() {
        let p = p.as_ref();
        if i > start && used + p.len() > budget {
            out.push(start..i);
            start = i;
            used = 0;
        }
        used += p.len();
    }
    if start < prompts.len() {
        out.push(start..prompts.len());
    }
    out
}

impl Scorer for DirectScorer<'_> {
    fn score(&self, prompts: &[Vec<u32>]) -> Result<Vec<OrderProbs>, JudgeError> {
        let mut out = Vec::with_capacity(prompts.len());
        for range in chunk_by_tokens(prompts, self.max_batch_tokens) {
            let batch = PackedBatch::new(&prompts[range])?;
            let logits = self
                .decoder
                .forward(&batch, None, crate::model::Output::LastLogits)?;
            out.extend(ab_probs_rows(&logits, self.token_ids.0, self.token_ids.1)?);
        }
        Ok(out)
    }
}

/// Scores through a [`PrefixScorer`]: shared prefixes computed once, and kept across
/// calls (e.g. the rounds of a tournament).
pub struct CachedScorer<'m> {
    pub decoder: &'m Decoder,
    pub inner: std::cell::RefCell<PrefixScorer>,
}

impl<'m> CachedScorer<'m> {
    /// A scorer with a prefix cache of `cache_bytes`.
    pub fn new(
        decoder: &'m Decoder,
        token_ids: (u32, u32),
        max_batch_tokens: usize,
        cache_bytes: usize,
    ) -> Self {
        Self {
            decoder,
            inner: std::cell::RefCell::new(PrefixScorer::new(
                token_ids,
                max_batch_tokens,
                cache_bytes,
            )),
        }
    }

    /// Tokens computed and reused so far.
    pub fn stats(&self) -> PrefillStats {
        self.inner.borrow().stats
    }
}

impl Scorer for CachedScorer<'_> {
    fn score(&self, prompts: &[Vec<u32>]) -> Result<Vec<OrderProbs>, JudgeError> {
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        Ok(self.inner.borrow_mut().score(self.decoder, &refs, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_budget() {
        let p: Vec<Vec<u32>> = [3, 4, 2, 9, 1].iter().map(|&n| vec![0; n]).collect();
        assert_eq!(chunk_by_tokens(&p, 7), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(chunk_by_tokens(&p, 100), vec![0..5]);
    }

    #[test]
    fn probabilities_are_a_softmax() {
        let p = ab_probs(&[0.0, (2f32).ln(), 0.0, 0.0], 1, 2);
        assert!((p.p_a - 0.4).abs() < 1e-7 && (p.p_b - 0.2).abs() < 1e-7);
    }
}

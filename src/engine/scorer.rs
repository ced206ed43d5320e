//! Direct execution of judge prompts: packed forward passes bounded by a token budget,
//! softmax over the whole vocabulary at each last position.

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

/// Scores one packed batch of prompts.
pub fn score_batch(
    decoder: &Decoder,
    prompts: &[&[u32]],
    token_ids: (u32, u32),
    metrics: &super::metrics::EngineMetrics,
) -> Result<Vec<OrderProbs>, ModelError> {
    let batch = PackedBatch::new(prompts)?;
    metrics.prefill_tokens.inc_by(batch.num_tokens() as u64);
    let logits: Vec<Vec<f32>> = decoder
        .forward(&batch, None, crate::model::Output::LastLogits)?
        .to_vec2()?;
    Ok(logits
        .iter()
        .map(|l| ab_probs(l, token_ids.0, token_ids.1))
        .collect())
}

/// Runs prompts on a decoder in packed batches of at most `max_batch_tokens` tokens.
pub struct DirectScorer<'m> {
    pub decoder: &'m Decoder,
    pub token_ids: (u32, u32),
    pub max_batch_tokens: usize,
}

/// Splits prompts into consecutive groups whose token total stays within `budget`
/// (a prompt longer than the budget forms a group of its own).
pub fn chunk_by_tokens(prompts: &[Vec<u32>], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, p) in prompts.iter().enumerate() {
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
            let logits: Vec<Vec<f32>> = self
                .decoder
                .forward(&batch, None, crate::model::Output::LastLogits)?
                .to_vec2()
                .map_err(ModelError::from)?;
            out.extend(
                logits
                    .iter()
                    .map(|l| ab_probs(l, self.token_ids.0, self.token_ids.1)),
            );
        }
        Ok(out)
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

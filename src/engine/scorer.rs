//! The two [`Scorer`]s: direct execution of judge prompts in packed forward passes bounded
//! by a token budget, and execution through the prefix cache.

use super::chunks::chunk_by_tokens;
use super::prefix::{PrefillStats, PrefixScorer};
use super::probs::ab_probs_rows;
use self_judge_judge::{JudgeError, OrderProbs, Scorer};
use self_judge_model::{Decoder, PackedBatch};

/// Runs prompts on a decoder in packed batches of at most `max_batch_tokens` tokens,
/// every prompt computed in full (the reference path for [`CachedScorer`]).
pub struct DirectScorer<'m> {
    pub decoder: &'m Decoder,
    pub token_ids: (u32, u32),
    pub max_batch_tokens: usize,
}

impl Scorer for DirectScorer<'_> {
    fn score(&self, prompts: &[Vec<u32>]) -> Result<Vec<OrderProbs>, JudgeError> {
        let mut out = Vec::with_capacity(prompts.len());
        for range in chunk_by_tokens(prompts, self.max_batch_tokens) {
            let batch = PackedBatch::new(&prompts[range])?;
            let logits =
                self.decoder
                    .forward(&batch, None, self_judge_model::Output::LastLogits)?;
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

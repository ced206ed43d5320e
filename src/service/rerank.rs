//! Reranking documents as answers to a query, by the judge: each document is judged
//! against one fixed reference answer, in both orders, so a document's score does not
//! depend on the other documents of the call and scores compare across calls.

use super::error::Result;
use super::facade::JudgeService;
use self_judge_judge::{hh_context, Pair, Verdict};
use self_judge_tokenizer::ChatMessage;

/// The answer every document is compared with: one that helps nobody, so a document
/// scores above 0.5 when the judge prefers it to not answering at all.
pub const REFERENCE_ANSWER: &str = "I don't know.";

/// A document's score from its verdict against the reference: the judge's debiased
/// probability that the document is preferred, `score_a / (score_a + score_b)` (the
/// two are probabilities of ` A` and ` B` among the whole vocabulary; 0.5 when both
/// are 0).
pub fn relevance(v: &Verdict) -> f64 {
    let total = v.score_a + v.score_b;
    if total > 0.0 {
        v.score_a / total
    } else {
        0.5
    }
}

/// Document indices, best first (ties in input order).
pub fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

impl JudgeService {
    /// The relevance of each document to `query` (see [`relevance`]), in input order;
    /// its `documents.len()` pairs are admitted, judged and batched like `/judge`'s.
    pub async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f64>> {
        let context = hh_context(&[ChatMessage::new("user", query)]);
        let pairs = documents
            .iter()
            .map(|d| Pair {
                context: context.clone(),
                response_a: d.clone(),
                response_b: REFERENCE_ANSWER.into(),
            })
            .collect();
        let verdicts = self.judge(pairs, None).await?;
        Ok(verdicts.iter().map(relevance).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings_are_sorted_and_stable() {
        assert_eq!(ranking(&[0.2, 0.9, 0.2, 0.5]), vec![1, 3, 0, 2]);
        assert!(ranking(&[]).is_empty());
    }
}

//! Next-token sampling: temperature, top-k, top-p (nucleus), seeded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use self_judge_model::ModelError;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Seed for reproducible sampling; random when absent.
    pub seed: Option<u64>,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Record each generated token's log-probability and this many alternatives
    /// (`Some(0)`: the token's own only).
    #[serde(default)]
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            max_new_tokens: 64,
            stop: vec![],
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Refuses values that have no meaning.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(ModelError::Input(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Input(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(ModelError::Input("max_new_tokens must be >= 1".into()));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ModelError::Input("stop strings must not be empty".into()));
        }
        if self.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(ModelError::Input(format!(
                "at most {MAX_TOP_LOGPROBS} alternatives per token can be returned"
            )));
        }
        Ok(())
    }
}

/// Draws tokens from logits according to [`SamplingParams`].
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: StdRng,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    /// Reused scratch buffer of (token, probability).
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params`; `stream` distinguishes the n samples of one request.
    pub fn new(params: &SamplingParams, stream: u64) -> Self {
        let seed = match params.seed {
            Some(s) => s.wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => rand::rng().random(),
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            scratch: Vec::new(),
        }
    }

    /// Picks the next token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 || self.top_k == 1 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature;
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        self.scratch.clear();
        self.scratch.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())),
        );
        let probs = &mut self.scratch;
        let keep_k = if self.top_k > 0 {
            self.top_k.min(probs.len())
        } else {
            probs.len()
        };
        if keep_k < probs.len() || self.top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            probs.truncate(keep_k);
            if self.top_p < 1.0 {
                let total: f32 = probs.iter().map(|p| p.1).sum();
                let mut cum = 0.0;
                let mut keep = probs.len();
                for (i, p) in probs.iter().enumerate() {
                    cum += p.1 / total;
                    if cum >= self.top_p {
                        keep = i + 1;
                        break;
                    }
                }
                probs.truncate(keep.max(1));
            }
        }
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for &(id, p) in probs.iter() {
            if r < p {
                return id;
            }
            r -= p;
        }
        probs.last().map(|p| p.0).unwrap_or(0)
    }
}

/// Most alternatives [`token_logprob`] returns per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A generated token's log-probability under the model (the softmax of the raw
/// logits, before temperature and truncation) and the `top` most likely tokens'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// (token, log-probability), most likely first.
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `id` and the `top` best alternatives in `logits`.
pub fn token_logprob(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() < top || l > best[best.len() - 1].1 {
                let at = best.partition_point(|b| b.1 >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
    }
    TokenLogprob {
        id,
        logprob: logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&l| l - log_z),
        top: best.into_iter().map(|(i, l)| (i, l - log_z)).collect(),
    }
}

/// Index of the largest logit (first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, p: f32, k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_p: p,
            top_k: k,
            seed: Some(seed),
            ..Default::default()
        }
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let lp = token_logprob(&logits, 2, 3);
        assert!((lp.logprob - (2.0f32.exp() / z).ln()).abs() < 1e-6);
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2], "most likely first, ties in index order");
        let total: f32 = logits.iter().map(|&l| (l - z.ln()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(&params(0.0, 1.0, 0, 1), 0);
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(&params(1.0, 1.0, 0, seed), 0);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [5.0, 4.9, 0.0, -1.0, -2.0];
        let mut s = Sampler::new(&params(1.0, 1.0, 2, 3), 0);
        for _ in 0..200 {
            assert!(s.sample(&logits) < 2);
        }
        // p(0) ~ 0.52, p(1) ~ 0.47: top_p 0.5 keeps only token 0.
        let mut s = Sampler::new(&params(1.0, 0.5, 0, 3), 0);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 0);
        }
    }

    #[test]
    fn rejects_bad_params() {
        assert!(params(-1.0, 1.0, 0, 0).validate().is_err());
        assert!(params(1.0, 0.0, 0, 0).validate().is_err());
        let mut p = params(1.0, 1.0, 0, 0);
        p.max_new_tokens = 0;
        assert!(p.validate().is_err());
    }
}

//! One self-judge step's data: two responses per query sampled from the CURRENT policy
//! with the engine's generation, judged by the REFERENCE model through the judge core
//! (both orders), and turned into chosen/rejected sequences with loss on the response.

use self_judge_engine::generate::{generate, GenerationRequest};
use self_judge_engine::sampling::SamplingParams;
use self_judge_engine::scorer::DirectScorer;
use self_judge_judge::verdict::{Side, Verdict};
use self_judge_judge::{Judge, JudgeConfig, JudgeOptions, Pair};
use self_judge_model::{Decoder, ModelView};
use self_judge_tokenizer::ChatTemplate;

use crate::config::self_judge_args::SelfJudgeArgs;
use crate::data::mask::{mask_labels, truncate_left};
use crate::data::self_judge::SelfJudgeRow;
use crate::loss::{Example, IGNORE};
use crate::model::TrainModel;

/// One sampled response: token ids (without EOS) and decoded text.
pub type Sample = (Vec<u32>, String);

/// A sampled pair with the reference's verdict.
#[derive(Debug, Clone)]
pub struct JudgedPair {
    /// Response 0 was shown in position A.
    pub responses: [Vec<u32>; 2],
    pub texts: [String; 2],
    pub verdict: Verdict,
}

impl JudgedPair {
    /// (winner, loser) token ids.
    pub fn ordered(&self) -> (&[u32], &[u32]) {
        match self.verdict.winner {
            Side::A => (&self.responses[0], &self.responses[1]),
            Side::B => (&self.responses[1], &self.responses[0]),
        }
    }
}

/// The policy (sampling), the reference (judging, reference log-probs) and the judge.
pub struct OnPolicy<'a> {
    pub model: &'a TrainModel,
    /// The judge and reference: the frozen copy under full fine-tuning, or the trained
    /// network without its adapters under LoRA (base weights shared, never trained).
    /// The policy is `model.decoder` itself, so sampling sees every update.
    reference: Decoder,
    /// The reference as the judge runs it: on the CPU its frozen f32 weights packed as
    /// the server packs them (one more copy of the weights), so that verdicts equal the
    /// server's bit for bit and do not depend on how pairs are batched.
    judge_decoder: Decoder,
    chat: ChatTemplate,
    pub judge: Judge,
    /// The run's settings, `max_length` limited to the model's context.
    pub args: SelfJudgeArgs,
}

impl<'a> OnPolicy<'a> {
    /// `reference` is the frozen initial decoder for full fine-tuning (None under LoRA).
    pub fn new(
        model: &'a TrainModel,
        reference: Option<&'a Decoder>,
        chat: &ChatTemplate,
        judge_cfg: &JudgeConfig,
        args: &SelfJudgeArgs,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            reference.is_some() != model.lora.is_some(),
            "a frozen reference is needed exactly when training without LoRA"
        );
        let reference = match reference {
            Some(d) => d.clone(),
            None => model.without_adapters(),
        };
        let judge_decoder = reference.packed_snapshot()?;
        let view = ModelView {
            decoder: &judge_decoder,
            tokenizer: &model.tokenizer,
            chat_template: Some(chat),
        };
        let judge = Judge::new(
            view,
            judge_cfg,
            &JudgeOptions {
                max_length: Some(args.max_length),
                ..Default::default()
            },
        )?;
        Ok(Self {
            model,
            reference,
            judge_decoder,
            chat: chat.clone(),
            judge,
            args: args.clone(),
        })
    }

    /// The reference model: the judge, and the reference log-probabilities (computed
    /// in a training pass, by the same ops as the policy's, so the two agree exactly at
    /// the start).
    pub fn reference(&self) -> &Decoder {
        &self.reference
    }

    /// The policy as generation reads it.
    fn policy(&self) -> ModelView<'_> {
        ModelView {
            decoder: &self.model.decoder,
            tokenizer: &self.model.tokenizer,
            chat_template: Some(&self.chat),
        }
    }

    /// Query token ids (with the tokenizer's special tokens, as the seed encodes), left
    /// truncated to [`query_room`].
    pub fn query_ids(&self, query: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = self.model.tokenizer.encode(query, true)?;
        let room = query_room(
            self.args.max_length,
            self.model.decoder.max_positions(),
            self.args.max_new_tokens,
        );
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        Ok(ids)
    }

    /// Two samples per row from the current policy; `seed` makes the step reproducible.
    pub fn sample(&self, rows: &[&SelfJudgeRow], seed: u64) -> anyhow::Result<Vec<[Sample; 2]>> {
        let reqs = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(GenerationRequest {
                    request: i as u64,
                    prompt_ids: self.query_ids(&r.query)?,
                    params: SamplingParams {
                        temperature: self.args.temperature,
                        top_p: self.args.top_p,
                        top_k: self.args.top_k,
                        seed: Some(seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
                        max_new_tokens: self.args.max_new_tokens,
                        stop: vec![],
                        logprobs: None,
                    },
                    n: 2,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = generate(self.policy(), &reqs)?;
        Ok(out
            .into_iter()
            .map(|g| {
                let mut it = g.into_iter().map(|s| (s.token_ids, s.text));
                let a = it.next().unwrap_or_default();
                let b = it.next().unwrap_or_default();
                [a, b]
            })
            .collect())
    }

    /// The reference's verdicts on (sample 0 in A, sample 1 in B) per row.
    pub fn judge_samples(
        &self,
        rows: &[&SelfJudgeRow],
        samples: Vec<[Sample; 2]>,
    ) -> anyhow::Result<Vec<JudgedPair>> {
        let pairs: Vec<Pair> = rows
            .iter()
            .zip(&samples)
            .map(|(r, s)| Pair {
                context: r.context.clone(),
                response_a: s[0].1.clone(),
                response_b: s[1].1.clone(),
            })
            .collect();
        let scorer = DirectScorer {
            decoder: &self.judge_decoder,
            token_ids: self.judge.token_ids,
            max_batch_tokens: self.args.judge_batch_size * self.args.max_length,
        };
        let verdicts = self.judge.judge(&pairs, &scorer)?;
        Ok(samples
            .into_iter()
            .zip(verdicts)
            .map(|([a, b], verdict)| JudgedPair {
                responses: [a.0, b.0],
                texts: [a.1, b.1],
                verdict,
            })
            .collect())
    }

    /// `query + response + eos` with labels on the response and the EOS only.
    pub fn sequence(&self, query: &[u32], response: &[u32]) -> Example {
        let mut ids = query.to_vec();
        ids.extend_from_slice(response);
        ids.extend(self.model.tokenizer.eos_ids.first().copied());
        let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        labels[..query.len()].iter_mut().for_each(|l| *l = IGNORE);
        truncate_left(&mut ids, &mut labels, self.args.max_length);
        Example {
            input_ids: ids,
            labels,
        }
    }

    /// A full conversation string (the dataset's own chosen/rejected, for evaluation)
    /// with labels after the last occurrence of the query's tokens; a text where the
    /// query cannot be found is learned nowhere (log-probability 0), as in the seed.
    pub fn text_sequence(&self, query: &str, text: &str) -> anyhow::Result<Example> {
        let tok = &self.model.tokenizer;
        let mut ids = tok.encode(text, true)?;
        let q = tok.encode(query, true)?;
        let mut labels = mask_labels(&ids, &[], &q).unwrap_or_else(|_| vec![IGNORE; ids.len()]);
        truncate_left(&mut ids, &mut labels, self.args.max_length);
        Ok(Example {
            input_ids: ids,
            labels,
        })
    }
}

/// The longest query kept: `max_length` tokens, as the seed truncates prompts, unless
/// the query and `max_new_tokens` would then overflow the model's positions.
pub fn query_room(max_length: usize, max_positions: usize, max_new_tokens: usize) -> usize {
    max_length
        .min(max_positions.saturating_sub(max_new_tokens))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::query_room;

    #[test]
    fn queries_keep_max_length_tokens_as_the_seed() {
        // The seed's HH self-judge run: max_length 2048, 768 new tokens; a 2000-token
        // query is not cut (it used to be cut to 1280).
        assert_eq!(query_room(2048, 8192, 768), 2048);
        assert!(query_room(2048, 8192, 768) >= 2000);
        // Only the model's own positions bound it further.
        assert_eq!(query_room(2048, 2048, 768), 1280);
        assert_eq!(query_room(16, 8, 20), 1);
    }
}

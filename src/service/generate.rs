//! Prompts and sampling settings checked against the limits, and generation on the
//! engine.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{Result, ServiceError};
use super::facade::JudgeService;
use self_judge_engine::{FinishReason, GenerationRequest, SamplingParams, TokenLogprob};
use self_judge_tokenizer::ChatMessage;

/// What to continue: raw text as is, or a conversation rendered through the chat
/// template with the generation cue.
#[derive(Debug, Clone)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Sampling settings as a client gives them (unset fields take the defaults).
#[derive(Debug, Clone, Default)]
pub struct SamplingRequest {
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    /// Record each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
}

/// One generated sample.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Generation {
    pub text: String,
    #[schema(value_type = String)]
    pub finish_reason: FinishReason,
    /// Generated tokens (EOS excluded).
    pub tokens: usize,
}

/// What a sample is made of, beyond its text (for APIs that report tokens).
#[derive(Debug, Clone, Default)]
pub struct SampleTokens {
    pub token_ids: Vec<u32>,
    /// One per token when log-probabilities were asked for.
    pub logprobs: Vec<TokenLogprob>,
}

/// The samples of one prompt.
#[derive(Debug, Clone)]
pub struct Generations {
    pub generations: Vec<Generation>,
    /// The tokens of each generation, in the same order.
    pub tokens: Vec<SampleTokens>,
    pub prompt_tokens: usize,
}

/// A validated generation: prompt tokens, settings and sample count.
pub(crate) struct SampleSpec {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub n: usize,
}

impl JudgeService {
    /// Checks `n` and the sampling settings against the limits (no model work).
    pub(crate) fn sampling_params(
        &self,
        n: Option<usize>,
        s: SamplingRequest,
    ) -> Result<(usize, SamplingParams)> {
        let limits = &self.limits;
        let n = n.unwrap_or(1);
        if n == 0 || n > limits.max_n {
            return Err(ServiceError::Invalid(format!(
                "`n` must be between 1 and {} (got {n})",
                limits.max_n
            )));
        }
        let max_new_tokens = s.max_new_tokens.unwrap_or(64.min(limits.max_new_tokens));
        if max_new_tokens == 0 || max_new_tokens > limits.max_new_tokens {
            return Err(ServiceError::Invalid(format!(
                "`max_new_tokens` must be between 1 and {} (got {max_new_tokens})",
                limits.max_new_tokens
            )));
        }
        let params = SamplingParams {
            temperature: s.temperature.unwrap_or(1.0),
            top_p: s.top_p.unwrap_or(1.0),
            top_k: s.top_k.unwrap_or(0),
            seed: s.seed,
            max_new_tokens,
            stop: s.stop.unwrap_or_default(),
            logprobs: s.logprobs,
        };
        params.validate()?;
        Ok((n, params))
    }

    /// Renders and tokenizes a prompt off the async runtime; a prompt over
    /// `max_input_tokens` (or over the context less one token for the reply) loses
    /// tokens on the left, or is refused when truncation is off.
    pub(crate) async fn prompt_ids(&self, prompt: Prompt) -> Result<Vec<u32>> {
        if let Prompt::Chat(m) = &prompt {
            if m.is_empty() {
                return Err(ServiceError::Invalid("`messages` is empty".into()));
            }
        }
        let model = self.model.clone();
        let text = tokio::task::spawn_blocking(move || -> Result<Vec<u32>> {
            let tok = &model.tokenizer;
            let text = match prompt {
                Prompt::Text(t) => t,
                Prompt::Chat(m) => {
                    let template = model
                        .chat_template()
                        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
                    template.render(&m, true, tok.bos_token.as_deref(), tok.eos_token.as_deref())?
                }
            };
            if text.is_empty() {
                return Err(ServiceError::Invalid("the prompt is empty".into()));
            }
            Ok(tok.encode(&text, true)?)
        });
        let mut ids = text.await??;
        // A prompt must leave the context room for at least one generated token.
        let room = self.model.decoder.max_positions().saturating_sub(1).max(1);
        let max_in = self.limits.max_input_tokens.min(room);
        if ids.len() > max_in {
            if !self.limits.truncate {
                return Err(ServiceError::TooLarge(format!(
                    "the prompt has {} tokens, over the limit of {max_in} (truncation is disabled)",
                    ids.len()
                )));
            }
            ids.drain(..ids.len() - max_in);
        }
        Ok(ids)
    }

    /// A prompt and its settings, validated (settings first: they need no tokenizer).
    pub(crate) async fn sample_spec(
        &self,
        prompt: Prompt,
        n: Option<usize>,
        sampling: SamplingRequest,
    ) -> Result<SampleSpec> {
        let (n, params) = self.sampling_params(n, sampling)?;
        let prompt_ids = self.prompt_ids(prompt).await?;
        Ok(SampleSpec {
            prompt_ids,
            params,
            n,
        })
    }

    /// Runs a validated generation on the engine (admission is the caller's).
    pub(crate) async fn run_generation(&self, spec: SampleSpec) -> Result<Generations> {
        let prompt_tokens = spec.prompt_ids.len();
        let req = GenerationRequest {
            request: 0,
            prompt_ids: spec.prompt_ids,
            params: spec.params,
            n: spec.n,
        };
        let (generations, tokens) = self
            .engine
            .generate(req)
            .await?
            .into_iter()
            .map(|g| {
                (
                    Generation {
                        tokens: g.token_ids.len(),
                        text: g.text,
                        finish_reason: g.finish_reason,
                    },
                    SampleTokens {
                        token_ids: g.token_ids,
                        logprobs: g.logprobs,
                    },
                )
            })
            .unzip();
        Ok(Generations {
            generations,
            tokens,
            prompt_tokens,
        })
    }

    /// `n` samples of a prompt; refused whole (429) when `n` sequences cannot be
    /// admitted now.
    pub async fn generate(
        &self,
        prompt: Prompt,
        n: Option<usize>,
        sampling: SamplingRequest,
    ) -> Result<Generations> {
        let spec = self.sample_spec(prompt, n, sampling).await?;
        let _admitted =
            self.admit_generation(spec.n, spec.prompt_ids.len(), spec.params.max_new_tokens, 0)?;
        self.run_generation(spec).await
    }
}

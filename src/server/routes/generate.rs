//! `POST /generate`, and the sampling shared with best-of-n tournaments.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::ApiJson;
use crate::engine::{GenerationRequest, SamplingParams};
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::schemas::{GenerateRequest, GenerateResponse, Generation, SamplingRequest};
use crate::server::state::{AppState, Ready};
use crate::tokenizer::ChatMessage;

/// A validated generation: prompt tokens and sampling settings.
pub struct SampleSpec {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub n: usize,
}

impl SampleSpec {
    /// Validates a prompt (`prompt` text or chat `messages`) and sampling settings
    /// against the server limits; long prompts lose tokens on the left or get 413.
    pub fn new(
        ready: &Ready,
        prompt: Option<String>,
        messages: Option<Vec<ChatMessage>>,
        n: Option<usize>,
        s: SamplingRequest,
    ) -> Result<Self, ApiError> {
        // The prompt limit is final only once the model is loaded.
        let limits = &ready.info.limits;
        let tok = &ready.model.tokenizer;
        let text = match (prompt, messages) {
            (Some(p), None) => p,
            (None, Some(m)) => {
                if m.is_empty() {
                    return Err(ApiError::validation("`messages` is empty"));
                }
                let template = ready
                    .model
                    .chat_template()
                    .map_err(|e| ApiError::validation(e.to_string()))?;
                template.render(&m, true, tok.bos_token.as_deref(), tok.eos_token.as_deref())?
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "give `prompt` or `messages`, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::validation(
                    "missing field: `prompt` or `messages`",
                ))
            }
        };
        if text.is_empty() {
            return Err(ApiError::validation("the prompt is empty"));
        }
        let n = n.unwrap_or(1);
        if n == 0 || n > limits.max_n {
            return Err(ApiError::validation(format!(
                "`n` must be between 1 and {} (got {n})",
                limits.max_n
            )));
        }
        let max_new_tokens = s.max_new_tokens.unwrap_or(64.min(limits.max_new_tokens));
        if max_new_tokens == 0 || max_new_tokens > limits.max_new_tokens {
            return Err(ApiError::validation(format!(
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
        };
        params.validate()?;
        let mut prompt_ids = tok.encode(&text, true)?;
        let max_in = limits.max_input_tokens;
        if prompt_ids.len() > max_in {
            if !limits.truncate {
                return Err(ApiError::too_large(format!(
                    "the prompt has {} tokens, over the limit of {max_in} (truncation is disabled)",
                    prompt_ids.len()
                )));
            }
            prompt_ids.drain(..prompt_ids.len() - max_in);
        }
        Ok(Self {
            prompt_ids,
            params,
            n,
        })
    }
}

/// Runs a validated generation on the engine.
pub async fn sample(ready: &Ready, spec: SampleSpec) -> Result<(Vec<Generation>, usize), ApiError> {
    let prompt_tokens = spec.prompt_ids.len();
    let req = GenerationRequest {
        request: 0,
        prompt_ids: spec.prompt_ids,
        params: spec.params,
        n: spec.n,
    };
    let out = ready.engine.generate(req).await?;
    let gens = out
        .into_iter()
        .map(|g| Generation {
            tokens: g.token_ids.len(),
            text: g.text,
            finish_reason: g.finish_reason,
        })
        .collect();
    Ok((gens, prompt_tokens))
}

/// Sample continuations of a prompt or conversation.
#[utoipa::path(
    post, path = "/generate", request_body = GenerateRequest,
    responses(
        (status = 200, description = "The samples", body = GenerateResponse),
        (status = 413, description = "Prompt over the limit with truncation disabled", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn generate(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let ready = st.ready()?;
    let sampling = req.sampling();
    let spec = SampleSpec::new(ready, req.prompt, req.messages, req.n, sampling)?;
    let _permit = st.admit(spec.n)?;
    let (generations, prompt_tokens) = sample(ready, spec).await?;
    Ok(Json(GenerateResponse {
        generations,
        prompt_tokens,
    }))
}

//! Request and response bodies of the HTTP API (schemas derived with utoipa).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::judge::{Bracket, Pair, Placement, Round, Verdict};
pub use crate::service::{Generation, Limits, SamplingRequest};
use crate::tokenizer::ChatMessage;

/// `POST /judge`: one pair (`context`, `response_a`, `response_b`) or a list (`pairs`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeRequest {
    pub context: Option<String>,
    pub response_a: Option<String>,
    pub response_b: Option<String>,
    pub pairs: Option<Vec<Pair>>,
    /// Restrict to these principles (default: all of the config's).
    pub principles: Option<Vec<String>>,
    /// Serve the request with this adapter (`--adapter NAME=DIR`; default: the base).
    pub adapter: Option<String>,
}

/// A verdict for a single pair, or a list for `pairs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JudgeResponse {
    One(Verdict),
    Many(Vec<Verdict>),
}

/// The sampling fields of a request type, in one place: serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, so the fields are repeated in each body.
macro_rules! sampling_fields {
    ($($t:ty),*) => {$(
        impl $t {
            /// The sampling fields.
            pub fn sampling(&self) -> SamplingRequest {
                SamplingRequest {
                    max_new_tokens: self.max_new_tokens,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: self.top_k,
                    seed: self.seed,
                    stop: self.stop.clone(),
                    logprobs: None,
                }
            }
        }
    )*};
}

sampling_fields!(GenerateRequest, TournamentRequest);

/// `POST /generate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Raw text continued as is.
    pub prompt: Option<String>,
    /// A conversation rendered through the chat template with the generation cue.
    pub messages: Option<Vec<ChatMessage>>,
    /// Number of samples (default 1); they share the prompt's prefill.
    pub n: Option<usize>,
    /// Default 64.
    pub max_new_tokens: Option<usize>,
    /// Default 1.0; 0 is greedy.
    pub temperature: Option<f32>,
    /// Default 1.0.
    pub top_p: Option<f32>,
    /// Default 0 (off).
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    /// Stop before any of these strings.
    pub stop: Option<Vec<String>>,
    /// Serve the request with this adapter (`--adapter NAME=DIR`; default: the base).
    pub adapter: Option<String>,
}

/// `POST /generate` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenerateResponse {
    pub generations: Vec<Generation>,
    pub prompt_tokens: usize,
}

/// `POST /tournament`: either given candidates (`contexts` + `responses`) or best-of-n
/// self-rejection (`query` or `messages`, `n`, sampling settings).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TournamentRequest {
    pub contexts: Option<Vec<String>>,
    pub responses: Option<Vec<Vec<String>>>,
    /// A user prompt; candidates are generated from it through the chat template.
    pub query: Option<String>,
    /// A conversation; candidates continue it.
    pub messages: Option<Vec<ChatMessage>>,
    /// The judge's context for generated candidates (default: the query or the
    /// conversation as `User: ...` / `Assistant: ...` turns, the HH style).
    pub context: Option<String>,
    /// Candidates to generate.
    pub n: Option<usize>,
    /// Seeds the bracket shuffles (replayable) and, in best-of-n form, the sampling.
    pub seed: Option<u64>,
    #[serde(default)]
    pub return_bracket: bool,
    /// Every candidate with the round it lost in and its score there, best first.
    #[serde(default)]
    pub return_ranking: bool,
    /// Server-sent events: `round` after each round (every context's matches), then
    /// `result` (this response), or `error`. Given-candidates form only.
    #[serde(default)]
    pub stream: bool,
    pub principles: Option<Vec<String>>,
    /// Best-of-n sampling settings (default 64 tokens, temperature 1, top_p 1).
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub stop: Option<Vec<String>>,
    /// Serve the request with this adapter (`--adapter NAME=DIR`; default: the base).
    pub adapter: Option<String>,
}

/// One context's winner.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Winner {
    pub text: String,
    /// Index into the context's candidate list.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bracket: Option<Bracket>,
    /// With `return_ranking`: every candidate, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranking: Option<Vec<Placement>>,
}

/// A `round` event of a streamed tournament.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoundEvent {
    /// 0-based.
    pub round: usize,
    /// Per context, the round just played (null for a context already decided).
    pub rounds: Vec<Option<Round>>,
}

/// `POST /tournament` response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TournamentResponse {
    pub winners: Vec<Winner>,
    /// The generated candidates (best-of-n form only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<Generation>>,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, `loading` or `unhealthy`.
    pub status: String,
}

/// A/B token ids in use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenIds {
    pub a: u32,
    pub b: u32,
}

/// An adapter served next to the base model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServedAdapter {
    pub name: String,
    /// The adapter folder.
    pub path: String,
}

/// `GET /info`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InfoResponse {
    pub version: String,
    pub model: String,
    /// The PEFT LoRA adapter merged into the model at start (`--adapter DIR`), if any.
    pub adapter: Option<String>,
    /// The adapters served unmerged next to the model (`--adapter NAME=DIR`), by the
    /// name requests give in `adapter` (or `model` on the OpenAI routes).
    pub adapters: Vec<ServedAdapter>,
    pub model_type: String,
    pub format: String,
    pub dtype: String,
    pub device: String,
    pub num_parameters: usize,
    pub max_position_embeddings: usize,
    pub config: String,
    pub token_ids: TokenIds,
    pub principles: Vec<String>,
    pub limits: Limits,
}

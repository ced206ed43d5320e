//! Request and response bodies of the OpenAI-compatible routes (the subset this server
//! implements, with OpenAI's field names), plus the `best_of` extension.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::judge::Bracket;

/// One string or a list of them (`stop`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// One part of a multi-part message content (only text parts are understood).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A message's content: a string, or a list of parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One chat turn (`system`, `user`, `assistant`; `developer` counts as `system`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OpenAiMessage {
    pub role: String,
    pub content: Option<MessageContent>,
    /// Accepted and not used.
    pub name: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts (and no choices).
    #[serde(default)]
    pub include_usage: bool,
}

impl CommonParams {
    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Settings both generation routes share.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CommonParams {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Choices to return (default 1).
    pub n: Option<usize>,
    pub stop: Option<OneOrMany>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Generate this many candidates and return the `n` best by self-judgment (a
    /// knockout tournament judged by the model itself); see `self_judge` in the reply.
    pub best_of: Option<usize>,
    /// Must be 0 (not implemented).
    pub frequency_penalty: Option<f32>,
    /// Must be 0 (not implemented).
    pub presence_penalty: Option<f32>,
    /// Accepted and not used.
    pub user: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<OpenAiMessage>,
    pub max_tokens: Option<usize>,
    /// Preferred over `max_tokens` when both are given.
    pub max_completion_tokens: Option<usize>,
    /// Return each token's log-probability.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token (0 to 20, with `logprobs`).
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// One prompt or a list holding one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PromptInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    /// Default 16, as OpenAI's.
    pub max_tokens: Option<usize>,
    /// Log-probabilities of each token and this many alternatives (0 to 20).
    pub logprobs: Option<usize>,
    /// Must be false (not implemented).
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Token counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Every generated token, the best_of candidates that were not returned included.
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// One alternative token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One generated token with its log-probability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenLogprobOut {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// A chat choice's `logprobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprobOut>,
}

/// The assistant's reply.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
}

/// One chat choice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    /// `stop` (end of sequence or a stop string) or `length`.
    pub finish_reason: String,
    pub logprobs: Option<ChatLogprobs>,
}

/// What self-judgment decided for `best_of`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SelfJudgeInfo {
    pub best_of: usize,
    /// Every candidate's text, in generation order.
    pub candidates: Vec<String>,
    /// The candidate index of each returned choice, best first.
    pub winners: Vec<usize>,
    /// The bracket that picked each winner (indices into `candidates`).
    pub brackets: Vec<Bracket>,
}

/// `POST /v1/chat/completions` response (`object`: `chat.completion`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_judge: Option<SelfJudgeInfo>,
}

/// A completion choice's `logprobs` (the legacy layout).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

/// One completion choice.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub finish_reason: Option<String>,
    pub logprobs: Option<CompletionLogprobs>,
}

/// `POST /v1/completions` response (`object`: `text_completion`; also each streamed
/// chunk, with `usage` only on the last one when asked for).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_judge: Option<SelfJudgeInfo>,
}

/// A streamed chat delta.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chat chunk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub finish_reason: Option<String>,
    pub logprobs: Option<ChatLogprobs>,
}

/// One server-sent event of a streamed chat completion
/// (`object`: `chat.completion.chunk`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    pub usage: Option<Usage>,
}

/// One served model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// For an adapter: the base model it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

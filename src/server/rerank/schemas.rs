//! Request and response bodies of the rerank routes: Cohere's (v1 and v2, also Jina's
//! shape) and TEI's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A document: a string, or an object with its `text`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DocumentInput {
    Text(String),
    Object { text: String },
}

impl DocumentInput {
    /// The document's text.
    pub fn into_text(self) -> String {
        match self {
            Self::Text(t) | Self::Object { text: t } => t,
        }
    }
}

/// `POST /v1/rerank` and `POST /v2/rerank` (Cohere, Jina).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RerankRequest {
    /// Optional; when given it must name the served model.
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<DocumentInput>,
    /// Return only the best `top_n` (default: all).
    pub top_n: Option<usize>,
    /// Include each document's text (default: true on v1, false on v2, as Cohere).
    pub return_documents: Option<bool>,
    /// Accepted and not used (Cohere's per-document token limit).
    pub max_tokens_per_doc: Option<usize>,
    /// Accepted and not used (Cohere v1's chunking).
    pub max_chunks_per_doc: Option<usize>,
}

/// A returned document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RerankDocument {
    pub text: String,
}

/// One ranked document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RerankResult {
    /// Position in the request's `documents`.
    pub index: usize,
    /// The judge's probability that the document is preferred over a reference answer
    /// that helps nobody ("I don't know."), in [0, 1]; comparable across calls.
    pub relevance_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<RerankDocument>,
}

/// Cohere's `meta.api_version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiVersion {
    pub version: String,
}

/// Cohere's `meta.billed_units`: the documents judged.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BilledUnits {
    pub search_units: usize,
}

/// Cohere's `meta`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RerankMeta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
}

/// `POST /v1/rerank` and `POST /v2/rerank` response: best first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RerankResponse {
    pub id: String,
    pub results: Vec<RerankResult>,
    pub meta: RerankMeta,
}

/// `POST /rerank` (TEI).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TeiRerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    /// Return the log-odds `ln(p / (1 - p))` instead of the probability `p`.
    #[serde(default)]
    pub raw_scores: bool,
    /// Include each text.
    #[serde(default)]
    pub return_text: bool,
    /// Accepted: judge prompts are always cut from the left to the server's limit
    /// (unless it runs with `--no-truncate`, then an over-long one is refused).
    pub truncate: Option<bool>,
    /// Accepted and not used.
    pub truncation_direction: Option<String>,
    /// Rank with this adapter (`--adapter NAME=DIR`; default: the base).
    pub adapter: Option<String>,
}

/// One ranked text (TEI's `Rank`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeiRank {
    pub index: usize,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

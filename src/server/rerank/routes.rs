//! `POST /v1/rerank`, `POST /v2/rerank` (Cohere, Jina) and `POST /rerank` (TEI): the
//! documents ranked as answers to the query by the judge ([`crate::service::rerank`]).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::schemas::{
    ApiVersion, BilledUnits, RerankDocument, RerankMeta, RerankRequest, RerankResponse,
    RerankResult, TeiRank, TeiRerankRequest,
};
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::json::ApiJson;
use crate::server::openai::convert::response_id;
use crate::server::openai::error::{OpenAiError, OpenAiErrorResponse};
use crate::server::openai::routes::{service_for, OpenAiJson};
use crate::server::state::AppState;
use crate::service::{ranking, JudgeService};

/// Scores every document, best first: (index, score).
async fn ranked(
    service: &JudgeService,
    query: &str,
    documents: &[String],
) -> Result<Vec<(usize, f64)>, ApiError> {
    if documents.is_empty() {
        return Err(ApiError::validation("`documents` is empty"));
    }
    let scores = service.rerank(query, documents).await?;
    Ok(ranking(&scores)
        .into_iter()
        .map(|i| (i, scores[i]))
        .collect())
}

async fn cohere(
    st: &AppState,
    req: RerankRequest,
    version: &str,
    return_default: bool,
) -> Result<RerankResponse, ApiError> {
    let ready = st.ready.get().ok_or_else(ApiError::not_ready)?;
    let service = match req.model.as_deref() {
        None => ready.service.clone(),
        Some(m) => service_for(ready, m).map_err(|e| e.0)?,
    };
    if req.top_n == Some(0) {
        return Err(ApiError::validation("`top_n` must be >= 1"));
    }
    let docs: Vec<String> = req.documents.into_iter().map(|d| d.into_text()).collect();
    let mut ranked = ranked(&service, &req.query, &docs).await?;
    ranked.truncate(req.top_n.unwrap_or(usize::MAX));
    let with_text = req.return_documents.unwrap_or(return_default);
    Ok(RerankResponse {
        id: response_id("rerank"),
        results: ranked
            .into_iter()
            .map(|(index, relevance_score)| RerankResult {
                index,
                relevance_score,
                document: with_text.then(|| RerankDocument {
                    text: docs[index].clone(),
                }),
            })
            .collect(),
        meta: RerankMeta {
            api_version: ApiVersion {
                version: version.into(),
            },
            billed_units: BilledUnits {
                search_units: docs.len(),
            },
        },
    })
}

/// Rerank documents (Cohere v1, also Jina's shape).
#[utoipa::path(post, path = "/v1/rerank", request_body = RerankRequest,
    responses(
        (status = 200, description = "The documents, best first", body = RerankResponse),
        (status = 400, description = "Invalid request", body = OpenAiErrorResponse),
        (status = 404, description = "Unknown model", body = OpenAiErrorResponse),
        (status = 413, description = "More judge prompts than the server admits", body = OpenAiErrorResponse),
        (status = 429, description = "At capacity", body = OpenAiErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rerank_v1(
    State(st): State<Arc<AppState>>,
    OpenAiJson(req): OpenAiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, OpenAiError> {
    Ok(Json(cohere(&st, req, "1", true).await?))
}

/// Rerank documents (Cohere v2).
#[utoipa::path(post, path = "/v2/rerank", request_body = RerankRequest,
    responses(
        (status = 200, description = "The documents, best first", body = RerankResponse),
        (status = 404, description = "Unknown model", body = ErrorResponse),
        (status = 413, description = "More judge prompts than the server admits", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rerank_v2(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, ApiError> {
    Ok(Json(cohere(&st, req, "2", false).await?))
}

/// Rerank texts (TEI).
#[utoipa::path(post, path = "/rerank", request_body = TeiRerankRequest,
    responses(
        (status = 200, description = "The texts, best first", body = [TeiRank]),
        (status = 413, description = "More judge prompts than the server admits", body = ErrorResponse),
        (status = 422, description = "Invalid request", body = ErrorResponse),
        (status = 429, description = "At capacity", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rerank_tei(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TeiRerankRequest>,
) -> Result<Json<Vec<TeiRank>>, ApiError> {
    let service = st.service()?.select(req.adapter.as_deref())?;
    let ranked = ranked(&service, &req.query, &req.texts).await?;
    Ok(Json(
        ranked
            .into_iter()
            .map(|(index, p)| TeiRank {
                index,
                score: if req.raw_scores {
                    let p = p.clamp(1e-12, 1.0 - 1e-12);
                    (p / (1.0 - p)).ln()
                } else {
                    p
                },
                text: req.return_text.then(|| req.texts[index].clone()),
            })
            .collect(),
    ))
}

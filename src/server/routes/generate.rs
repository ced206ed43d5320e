//! `POST /generate`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::ApiJson;
use crate::server::error::{ApiError, ErrorResponse};
use crate::server::schemas::{GenerateRequest, GenerateResponse};
use crate::server::state::AppState;
use crate::service::Prompt;
use crate::tokenizer::ChatMessage;

/// The request's one prompt: `prompt` text or chat `messages`.
pub fn one_prompt(
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
) -> Result<Prompt, ApiError> {
    match (prompt, messages) {
        (Some(p), None) => Ok(Prompt::Text(p)),
        (None, Some(m)) => Ok(Prompt::Chat(m)),
        (Some(_), Some(_)) => Err(ApiError::validation(
            "give `prompt` or `messages`, not both",
        )),
        (None, None) => Err(ApiError::validation(
            "missing field: `prompt` or `messages`",
        )),
    }
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
    let service = st.service()?.select(req.adapter.as_deref())?;
    let sampling = req.sampling();
    let prompt = one_prompt(req.prompt, req.messages)?;
    let out = service.generate(prompt, req.n, sampling).await?;
    Ok(Json(GenerateResponse {
        generations: out.generations,
        prompt_tokens: out.prompt_tokens,
    }))
}

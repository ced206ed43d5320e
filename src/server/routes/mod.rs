//! The router: API routes behind the optional API key, open operational routes, JSON
//! errors for every failure, request metrics.

pub mod generate;
pub mod judge;
pub mod meta;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::error::ApiError;
pub use super::json::ApiJson;
use super::metrics::track;
use super::openai::routes as openai;
use super::rerank::routes as rerank;
use super::state::AppState;

async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return in_shape_of(req.uri(), ApiError::unauthorized());
        }
    }
    next.run(req).await
}

/// An error in the shape its route's clients parse: OpenAI's under `/v1/`.
fn in_shape_of(uri: &Uri, e: ApiError) -> Response {
    if uri.path().starts_with("/v1/") {
        super::openai::error::OpenAiError(e).into_response()
    } else {
        e.into_response()
    }
}

async fn not_found(uri: Uri) -> Response {
    in_shape_of(&uri, ApiError::not_found(uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut e = ApiError::validation(format!("{method} is not allowed on {}", uri.path()));
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.error_type = "method_not_allowed";
    in_shape_of(&uri, e)
}

/// Builds the application.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/judge", post(judge::judge))
        .route("/tournament", post(judge::tournament))
        .route("/generate", post(generate::generate))
        .route("/info", get(meta::info))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/chat/completions",
            post(super::openai::chat::chat_completions),
        )
        .route(
            "/v1/completions",
            post(super::openai::completions::completions),
        )
        .route("/v1/rerank", post(rerank::rerank_v1))
        .route("/v2/rerank", post(rerank::rerank_v2))
        .route("/rerank", post(rerank::rerank_tei))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let open = Router::new()
        .route("/health", get(meta::health))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi_json))
        .route("/docs", get(meta::docs));
    let metrics = state.metrics.clone();
    api.merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(metrics, track))
        .with_state(state)
}

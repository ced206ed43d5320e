//! `GET /health`, `/info`, `/metrics`, `/openapi.json`, `/docs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use crate::server::error::ApiError;
use crate::server::openapi;
use crate::server::schemas::{HealthResponse, InfoResponse};
use crate::server::state::AppState;

/// 200 when the model is loaded and the last forward pass succeeded, else 503.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "Ready", body = HealthResponse),
    (status = 503, description = "Loading, or the last forward pass failed", body = HealthResponse),
))]
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    let (code, status) = match st.healthy() {
        None => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        Some(false) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        Some(true) => (StatusCode::OK, "ok"),
    };
    (
        code,
        Json(HealthResponse {
            status: status.into(),
        }),
    )
        .into_response()
}

/// Model, token ids, principles and every limit.
#[utoipa::path(get, path = "/info", responses(
    (status = 200, description = "Server information", body = InfoResponse),
    (status = 503, description = "Loading", body = crate::server::error::ErrorResponse),
), security(("bearer" = [])))]
pub async fn info(State(st): State<Arc<AppState>>) -> Result<Json<InfoResponse>, ApiError> {
    let ready = st.ready.get().ok_or_else(ApiError::not_ready)?;
    Ok(Json(ready.info.clone()))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus metrics", body = String)))]
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    if let Some(ready) = st.ready.get() {
        let kv = ready.service.kv_budget();
        st.metrics.kv_reserved.set(kv.reserved_bytes() as i64);
        st.metrics.kv_budget.set(kv.budget_bytes() as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document.
pub async fn openapi_json(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.spec.clone(),
    )
        .into_response()
}

/// Offline HTML documentation rendered from the OpenAPI document.
pub async fn docs() -> Html<String> {
    Html(openapi::docs_html())
}

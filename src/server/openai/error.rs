//! Errors on the OpenAI-compatible routes: OpenAI's shape (`{"error": {"message",
//! "type", "param", "code"}}`, which the official clients parse) plus our `error_type`
//! beside it, and 400 where our own routes answer 422 (what OpenAI clients expect).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::error::ApiError;

/// The inner object of an OpenAI error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// OpenAI's kind (`invalid_request_error`, `rate_limit_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// Our stable kind (`validation`, `overloaded`, `not_found`, ...).
    pub code: Option<String>,
}

/// An error response of the `/v1` routes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorResponse {
    pub error: OpenAiErrorBody,
    /// The same kind as `error.code` (our error shape's key).
    pub error_type: String,
}

/// An [`ApiError`] answered in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<crate::service::ServiceError> for OpenAiError {
    fn from(e: crate::service::ServiceError) -> Self {
        Self(e.into())
    }
}

impl OpenAiError {
    /// 400 naming the request field at fault.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self(ApiError::validation(m))
    }

    /// 404 for a model this server does not serve.
    pub fn unknown_model(model: &str, served: &str) -> Self {
        let mut e = ApiError::validation(format!(
            "the model `{model}` does not exist here; this server serves {served} (GET /v1/models)"
        ));
        e.status = StatusCode::NOT_FOUND;
        e.error_type = "model_not_found";
        Self(e)
    }

    /// The body of this error (also sent as the last event of a failed stream).
    pub fn body(&self) -> OpenAiErrorResponse {
        let e = &self.0;
        let kind = match e.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        OpenAiErrorResponse {
            error: OpenAiErrorBody {
                message: e.message.clone(),
                kind: kind.into(),
                param: None,
                code: Some(e.error_type.into()),
            },
            error_type: e.error_type.into(),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let status = match self.0.status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        let mut res = (status, Json(body)).into_response();
        if let Some(s) = self.0.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        res
    }
}

/// The error statuses of the generation routes, documented once for both.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: the handlers answer with `OpenAiError`
pub enum GenerationErrors {
    #[response(status = 400, description = "Invalid request")]
    Invalid(OpenAiErrorResponse),
    #[response(status = 404, description = "Unknown model")]
    UnknownModel(OpenAiErrorResponse),
    #[response(
        status = 413,
        description = "Prompt over the limit or more work than the server admits"
    )]
    TooLarge(OpenAiErrorResponse),
    #[response(status = 415, description = "Not JSON")]
    NotJson(OpenAiErrorResponse),
    #[response(status = 429, description = "At capacity")]
    Overloaded(OpenAiErrorResponse),
    #[response(status = 503, description = "Loading")]
    Loading(OpenAiErrorResponse),
}

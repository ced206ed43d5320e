//! HTTP errors: always JSON `{"error": ..., "error_type": ...}` with the right status.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::EngineError;
use crate::judge::JudgeError;
use crate::model::ModelError;
use crate::service::ServiceError;

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong, for a person.
    pub error: String,
    /// Stable machine-readable kind: `invalid_json`, `validation`, `payload_too_large`,
    /// `unsupported_media_type`, `unauthorized`, `overloaded`, `not_ready`, `not_found`,
    /// `adapter_not_found`, `model_not_found`,
    /// `model_error`, `internal`.
    pub error_type: String,
}

/// An error a handler returns.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 422: the request is well-formed JSON but not acceptable.
    pub fn validation(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", m)
    }

    /// 413: the request is larger than a limit.
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
    }

    /// 429 with `Retry-After`.
    pub fn overloaded(m: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", m)
        }
    }

    /// 503 while the model loads.
    pub fn not_ready() -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the model is still loading",
            )
        }
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (use `Authorization: Bearer <key>`)",
        )
    }

    /// 404.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
    }

    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl ApiError {
    /// The JSON body of this error.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse {
            error: self.message.clone(),
            error_type: self.error_type.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut res = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::validation(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(e) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::too_large("the request body is larger than the limit (--max-body-bytes)")
            }
            other => Self::new(other.status(), "invalid_request", other.body_text()),
        }
    }
}

impl From<JudgeError> for ApiError {
    fn from(e: JudgeError) -> Self {
        match e {
            JudgeError::Input(m) => Self::validation(m),
            JudgeError::TooLong(m) => Self::too_large(m),
            JudgeError::Model(ModelError::Input(m)) => Self::validation(m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        JudgeError::Model(e).into()
    }
}

impl From<crate::tokenizer::TokenizerError> for ApiError {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        ModelError::from(e).into()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => Self::validation(m),
            EngineError::Forward(m) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", m)
            }
            EngineError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the engine has stopped",
            ),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self::validation(m),
            ServiceError::TooLarge(m) => Self::too_large(m),
            ServiceError::Overloaded(m) => Self::overloaded(m),
            ServiceError::UnknownAdapter(m) => {
                Self::new(StatusCode::NOT_FOUND, "adapter_not_found", m)
            }
            ServiceError::Judge(e) => e.into(),
            ServiceError::Engine(e) => e.into(),
            ServiceError::Internal(m) => Self::internal(m),
        }
    }
}

//! Shared server state: metrics, the API key, and the judge service once the model
//! has loaded.

use std::sync::OnceLock;

use super::error::ApiError;
use super::metrics::ServerMetrics;
use super::schemas::InfoResponse;
use crate::service::JudgeService;

/// What exists once the model is loaded.
pub struct Ready {
    pub service: JudgeService,
    pub info: InfoResponse,
    /// The name the OpenAI-compatible routes serve the model under.
    pub model_id: String,
    /// When the model was loaded (seconds since the epoch).
    pub created: u64,
}

/// State shared by every handler.
pub struct AppState {
    pub ready: OnceLock<Ready>,
    /// Largest request body (enforced before the model is loaded too).
    pub max_body_bytes: usize,
    pub metrics: ServerMetrics,
    pub api_key: Option<String>,
    /// The OpenAPI document served at `/openapi.json` (this server's limits and names).
    pub spec: String,
}

impl AppState {
    /// State for a server that is still loading its model.
    pub fn new(
        max_body_bytes: usize,
        metrics: ServerMetrics,
        api_key: Option<String>,
        spec: String,
    ) -> Self {
        Self {
            ready: OnceLock::new(),
            max_body_bytes,
            metrics,
            api_key,
            spec,
        }
    }

    /// The judge service, or 503 while the model loads.
    pub fn service(&self) -> Result<&JudgeService, ApiError> {
        Ok(&self.ready.get().ok_or_else(ApiError::not_ready)?.service)
    }

    /// True when the model is loaded and the last forward pass succeeded.
    pub fn healthy(&self) -> Option<bool> {
        self.ready.get().map(|r| r.service.healthy())
    }
}

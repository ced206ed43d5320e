//! Shared server state: limits, admission control, metrics, and the engine once the
//! model has loaded.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::ServerMetrics;
use super::schemas::{InfoResponse, Limits};
use crate::engine::EngineHandle;
use crate::judge::Judge;
use crate::model::LoadedModel;

/// What exists once the model is loaded.
pub struct Ready {
    pub engine: EngineHandle,
    pub judge: Judge,
    pub model: Arc<LoadedModel>,
    pub info: InfoResponse,
}

/// State shared by every handler.
pub struct AppState {
    pub ready: OnceLock<Ready>,
    pub limits: Limits,
    pub metrics: ServerMetrics,
    pub api_key: Option<String>,
    admission: Arc<Semaphore>,
}

impl AppState {
    /// State for a server that is still loading its model.
    pub fn new(limits: Limits, metrics: ServerMetrics, api_key: Option<String>) -> Self {
        Self {
            ready: OnceLock::new(),
            admission: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
            metrics,
            api_key,
        }
    }

    /// The loaded model, or 503.
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(ApiError::not_ready)
    }

    /// True when the model is loaded and the last forward pass succeeded.
    pub fn healthy(&self) -> Option<bool> {
        self.ready
            .get()
            .map(|r| r.engine.healthy.load(Ordering::Relaxed))
    }

    /// Admits `units` of work (judge prompts or generated sequences) at once, or refuses
    /// the whole request before any compute: 413 if it could never fit, 429 if the
    /// server is busy now.
    pub fn admit(&self, units: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let cap = self.limits.max_concurrent_requests;
        if units > cap {
            return Err(ApiError::too_large(format!(
                "the request needs {units} judge prompts/sequences but the server admits at most {cap} at once (--max-concurrent-requests)"
            )));
        }
        let n =
            u32::try_from(units.max(1)).map_err(|_| ApiError::too_large("request too large"))?;
        self.admission
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| {
                self.metrics.rejected.inc();
                ApiError::overloaded(format!(
                "the server is at capacity ({cap} concurrent judge prompts/sequences); retry later"
            ))
            })
    }
}

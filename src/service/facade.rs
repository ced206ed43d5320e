//! [`JudgeService`]: what it owns, and admission.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{Result, ServiceError};
use super::limits::Limits;

use self_judge_engine::EngineHandle;
use self_judge_judge::Judge;
use self_judge_model::LoadedModel;

/// The loaded model's services (see the module docs).
pub struct JudgeService {
    pub(crate) engine: EngineHandle,
    pub(crate) judge: Arc<Judge>,
    pub(crate) model: Arc<LoadedModel>,
    pub(crate) limits: Limits,
    admission: Arc<Semaphore>,
    /// Counts requests refused for capacity.
    rejected: IntCounter,
}

impl JudgeService {
    /// A service over a running engine. The limits are final here
    /// (`max_input_tokens` included); invalid ones are refused naming the flag.
    pub fn new(
        model: Arc<LoadedModel>,
        judge: Judge,
        engine: EngineHandle,
        limits: Limits,
        rejected: IntCounter,
    ) -> Result<Self> {
        limits.check().map_err(ServiceError::Invalid)?;
        Ok(Self {
            admission: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            engine,
            judge: Arc::new(judge),
            model,
            limits,
            rejected,
        })
    }

    /// The limits requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The judge in use (all principles).
    pub fn judge_settings(&self) -> &Judge {
        &self.judge
    }

    /// The loaded model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// False once a forward pass has failed.
    pub fn healthy(&self) -> bool {
        self.engine.healthy.load(Ordering::Relaxed)
    }

    /// Admits `units` of work (judge prompts or generated sequences) at once, or
    /// refuses the whole request before any compute: too large if it could never fit,
    /// overloaded if the server is busy now.
    pub fn admit(&self, units: usize) -> Result<OwnedSemaphorePermit> {
        let cap = self.limits.max_concurrent_requests;
        if units > cap {
            return Err(ServiceError::TooLarge(format!(
                "the request needs {units} judge prompts/sequences but the server admits at most {cap} at once (--max-concurrent-requests)"
            )));
        }
        let n = u32::try_from(units.max(1))
            .map_err(|_| ServiceError::TooLarge("request too large".into()))?;
        self.admission
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| {
                self.rejected.inc();
                ServiceError::Overloaded(format!(
                    "the server is at capacity ({cap} concurrent judge prompts/sequences); retry later"
                ))
            })
    }
}

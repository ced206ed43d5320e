//! [`JudgeService`]: what it owns, and admission.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{Result, ServiceError};
use super::kv_budget::{KvBudget, KvReservation};
use super::limits::Limits;

use self_judge_engine::EngineHandle;
use self_judge_judge::Judge;
use self_judge_model::LoadedModel;

/// What an admitted generation holds until it ends: its share of the concurrent work
/// and of the keys/values budget.
#[derive(Debug)]
pub struct Admitted {
    _units: OwnedSemaphorePermit,
    _kv: KvReservation,
}

/// An adapter served next to the base model (`--adapter NAME=DIR`).
pub struct NamedAdapter {
    /// What requests call it (`model` on the OpenAI routes, `adapter` elsewhere).
    pub name: String,
    /// The base with the adapter attached (weights shared with the base).
    pub model: Arc<LoadedModel>,
}

/// The loaded model's services (see the module docs). A clone is cheap and shares
/// admission; [`JudgeService::adapted`] gives the same service over one adapter.
#[derive(Clone)]
pub struct JudgeService {
    pub(crate) engine: EngineHandle,
    pub(crate) judge: Arc<Judge>,
    pub(crate) model: Arc<LoadedModel>,
    pub(crate) limits: Limits,
    admission: Arc<Semaphore>,
    /// Keys/values of running generations.
    kv: Arc<KvBudget>,
    /// Counts requests refused for capacity.
    rejected: IntCounter,
    /// The adapters; model `i + 1` of the engine is adapter `i`.
    adapters: Arc<Vec<NamedAdapter>>,
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
        let kv = Arc::new(KvBudget::new(&model, limits.kv_budget_bytes)?);
        Ok(Self {
            kv,
            admission: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            engine,
            judge: Arc::new(judge),
            model,
            limits,
            rejected,
            adapters: Arc::new(Vec::new()),
        })
    }

    /// Serves `adapters` next to the base: the engine must have been spawned with the
    /// base model first and then each adapter's model, in this order.
    pub fn with_adapters(mut self, adapters: Vec<NamedAdapter>) -> Self {
        self.adapters = Arc::new(adapters);
        self
    }

    /// The names of the adapters served next to the base.
    pub fn adapter_names(&self) -> Vec<String> {
        self.adapters.iter().map(|a| a.name.clone()).collect()
    }

    /// This service over the adapter `name` (its judge, generations and caches),
    /// sharing admission with the base; an unknown name is an error naming the known
    /// ones.
    pub fn adapted(&self, name: &str) -> Result<JudgeService> {
        let unknown = || {
            let known = self.adapter_names();
            ServiceError::UnknownAdapter(if known.is_empty() {
                format!("no adapter `{name}`: the server serves none (start it with --adapter NAME=DIR)")
            } else {
                format!(
                    "no adapter `{name}`; the server serves {}",
                    known.join(", ")
                )
            })
        };
        let i = self
            .adapters
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(unknown)?;
        let engine = self.engine.for_model(i + 1).ok_or_else(unknown)?;
        Ok(JudgeService {
            engine,
            model: self.adapters[i].model.clone(),
            ..self.clone()
        })
    }

    /// The base, or the adapter `name` when given.
    pub fn select(&self, name: Option<&str>) -> Result<JudgeService> {
        match name {
            None => Ok(self.clone()),
            Some(n) => self.adapted(n),
        }
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

    /// The keys/values budget of generations (shared with the adapters).
    pub fn kv_budget(&self) -> &KvBudget {
        &self.kv
    }

    /// Admits a generation of `n` sequences from `prompt_tokens` tokens, up to
    /// `max_new_tokens` each, with `extra` more units of work (a best-of-n's judge
    /// prompts): its sequences and its keys/values together, or neither.
    pub(crate) fn admit_generation(
        &self,
        n: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
        extra: usize,
    ) -> Result<Admitted> {
        let units = self.admit(n + extra)?;
        let kv = self
            .kv
            .reserve(n, prompt_tokens, max_new_tokens, || self.rejected.inc())?;
        Ok(Admitted {
            _units: units,
            _kv: kv,
        })
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

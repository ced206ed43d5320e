//! The keys/values budget of running generations: a generation holds, per sequence, the
//! keys and values of its prompt and of every token it generates, and that memory is
//! only known to be bounded if it is reserved before the first token. Judge prompts
//! need no reservation: their keys/values live in the prefix cache (bounded by
//! `--prefix-cache-mb`) and in the one batch being computed (`--max-batch-tokens`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self_judge_model::LoadedModel;

use super::error::{Result, ServiceError};

/// Reservations are counted in KiB so that budgets up to 4 TiB fit a semaphore's u32.
const UNIT: usize = 1024;

/// The budget, shared by every clone of the service.
#[derive(Debug)]
pub struct KvBudget {
    permits: Arc<Semaphore>,
    /// The budget in units (what the semaphore started with).
    units: usize,
    budget_bytes: usize,
    bytes_per_token: usize,
    max_positions: usize,
}

/// Memory reserved for one generation request; released when dropped.
pub type KvReservation = OwnedSemaphorePermit;

impl KvBudget {
    /// A budget of `budget_bytes` for `model`'s keys/values (refused when it is under
    /// one unit or over what can be counted).
    pub fn new(model: &LoadedModel, budget_bytes: usize) -> Result<Self> {
        let cfg = &model.decoder.cfg;
        let bytes_per_token = 2
            * cfg.num_hidden_layers
            * cfg.num_key_value_heads
            * cfg.head_dim
            * model.decoder.dtype().size_in_bytes();
        let units = budget_bytes / UNIT;
        if units == 0 || units > u32::MAX as usize {
            return Err(ServiceError::Invalid(format!(
                "--kv-budget-mb must be between 1 and {} MiB",
                u32::MAX as usize / 1024
            )));
        }
        Ok(Self {
            permits: Arc::new(Semaphore::new(units)),
            units,
            budget_bytes,
            bytes_per_token,
            max_positions: model.decoder.max_positions(),
        })
    }

    /// The budget in bytes.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Bytes reserved by the generations running now.
    pub fn reserved_bytes(&self) -> usize {
        (self.units - self.permits.available_permits()) * UNIT
    }

    /// The most a generation of `n` sequences from `prompt_tokens` tokens, each up to
    /// `max_new_tokens` more, can hold.
    pub fn bytes_for(&self, n: usize, prompt_tokens: usize, max_new_tokens: usize) -> usize {
        let positions = (prompt_tokens + max_new_tokens).min(self.max_positions);
        n.saturating_mul(positions)
            .saturating_mul(self.bytes_per_token)
    }

    /// Reserves what such a generation can hold, or refuses it: too large if it can
    /// never fit the budget, overloaded if the running generations leave too little now.
    pub fn reserve(
        &self,
        n: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
        on_refused: impl FnOnce(),
    ) -> Result<KvReservation> {
        let bytes = self.bytes_for(n, prompt_tokens, max_new_tokens);
        let units = bytes.div_ceil(UNIT).max(1);
        let mib = |b: usize| b.div_ceil(1 << 20);
        if units > self.units {
            return Err(ServiceError::TooLarge(format!(
                "{n} sequences of up to {} tokens need {} MiB of keys/values but the budget is {} MiB (--kv-budget-mb); ask for fewer or shorter",
                (prompt_tokens + max_new_tokens).min(self.max_positions),
                mib(bytes),
                mib(self.budget_bytes)
            )));
        }
        // At most `self.units`, which fits a u32 (checked in `new`).
        self.permits
            .clone()
            .try_acquire_many_owned(units as u32)
            .map_err(|_| {
                on_refused();
                ServiceError::Overloaded(format!(
                    "running generations hold the keys/values budget ({} MiB, --kv-budget-mb); retry later",
                    mib(self.budget_bytes)
                ))
            })
    }
}

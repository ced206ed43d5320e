//! The limits every request is held to, fixed once the model is loaded.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Server limits reported by `/info`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    /// Judge prompts (and generated sequences) admitted at once.
    pub max_concurrent_requests: usize,
    pub max_input_tokens: usize,
    pub truncate: bool,
    pub max_new_tokens: usize,
    pub max_n: usize,
    pub max_body_bytes: usize,
    /// Bytes of keys/values that running generations may hold together (each is
    /// reserved its most before it starts).
    pub kv_budget_bytes: usize,
}

impl Limits {
    /// Fails naming the first limit that is 0 (or too large to count permits with).
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-size", self.max_batch_size),
            ("--max-concurrent-requests", self.max_concurrent_requests),
            ("--max-new-tokens", self.max_new_tokens),
            ("--max-n", self.max_n),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-input-tokens", self.max_input_tokens),
            ("--kv-budget-mb", self.kv_budget_bytes),
        ] {
            if v == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.max_concurrent_requests > u32::MAX as usize {
            return Err("--max-concurrent-requests is too large".into());
        }
        Ok(())
    }
}

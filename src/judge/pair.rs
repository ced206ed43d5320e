//! The unit of judgment: a context and two responses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A context and two responses to compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub context: String,
    pub response_a: String,
    pub response_b: String,
}

//! Batch and cache limits of the engine.

/// Batch limits of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Token budget of one judge forward pass.
    pub max_batch_tokens: usize,
    /// Prompts per judge forward pass.
    pub max_batch_size: usize,
    /// Bytes of keys/values kept for shared judge-prompt prefixes, over all the
    /// engine's models (each of `k` models gets `1/k` of it).
    pub prefix_cache_bytes: usize,
    /// Test hook: the first this many judge batches fail as a broken forward would
    /// (so that what a failure does to health and to requests can be tested).
    pub failing_judge_batches: usize,
}

//! Counters and histograms the engine thread updates (registered in the server's
//! Prometheus registry).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Engine-side metrics.
#[derive(Clone)]
pub struct EngineMetrics {
    /// Judge prompts per forward pass.
    pub batch_size: Histogram,
    /// Tokens per judge forward pass.
    pub batch_tokens: Histogram,
    /// Seconds per judge forward pass.
    pub batch_seconds: Histogram,
    /// Judge prompts waiting in the queue.
    pub queue_prompts: IntGauge,
    /// Judge prompts scored.
    pub prompts_scored: IntCounter,
    /// Judge prompts dropped because their client disconnected.
    pub prompts_cancelled: IntCounter,
    /// Generation sequences stopped because their client disconnected.
    pub generations_cancelled: IntCounter,
    /// Tokens generated.
    pub generated_tokens: IntCounter,
    /// Sequences decoded together per generation step.
    pub decode_batch_size: Histogram,
    /// Sequences being generated now (what load tests and autoscalers watch).
    pub running_sequences: IntGauge,
    /// Keys/values held by running generations (the judge's are bounded by the prefix
    /// cache and one batch).
    pub kv_bytes: IntGauge,
    /// Prompt tokens computed by judge forwards (after prefix sharing).
    pub prefill_tokens: IntCounter,
    /// Prompt tokens that a shared prefix saved.
    pub prefix_tokens_saved: IntCounter,
    /// Judge prompts that reused a shared prefix.
    pub prefix_hits: IntCounter,
    /// Forward passes that failed.
    pub forward_errors: IntCounter,
}

fn buckets(max_pow: u32) -> Vec<f64> {
    (0..=max_pow).map(|p| f64::from(1u32 << p)).collect()
}

impl EngineMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let h = |name: &str, help: &str, b: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(b))
        };
        let m = Self {
            batch_size: h(
                "self_judge_batch_size",
                "Judge prompts per forward pass",
                buckets(10),
            )?,
            batch_tokens: h(
                "self_judge_batch_tokens",
                "Tokens per judge forward pass",
                buckets(17),
            )?,
            batch_seconds: h(
                "self_judge_batch_seconds",
                "Seconds per judge forward pass",
                prometheus::exponential_buckets(0.005, 2.0, 14)?,
            )?,
            queue_prompts: IntGauge::new("self_judge_queue_prompts", "Judge prompts waiting")?,
            running_sequences: IntGauge::new(
                "self_judge_running_sequences",
                "Sequences being generated now",
            )?,
            prompts_scored: IntCounter::new(
                "self_judge_prompts_scored_total",
                "Judge prompts scored",
            )?,
            prompts_cancelled: IntCounter::new(
                "self_judge_prompts_cancelled_total",
                "Judge prompts dropped because the client disconnected",
            )?,
            generations_cancelled: IntCounter::new(
                "self_judge_generations_cancelled_total",
                "Generated sequences stopped because the client disconnected",
            )?,
            generated_tokens: IntCounter::new(
                "self_judge_generated_tokens_total",
                "Tokens generated",
            )?,
            decode_batch_size: h(
                "self_judge_decode_batch_size",
                "Sequences per decode step",
                buckets(8),
            )?,
            kv_bytes: IntGauge::new(
                "self_judge_kv_bytes",
                "Bytes of keys/values held by running generations",
            )?,
            prefill_tokens: IntCounter::new(
                "self_judge_prefill_tokens_total",
                "Judge prompt tokens computed by forward passes",
            )?,
            prefix_tokens_saved: IntCounter::new(
                "self_judge_prefix_tokens_saved_total",
                "Judge prompt tokens not recomputed thanks to a shared prefix",
            )?,
            prefix_hits: IntCounter::new(
                "self_judge_prefix_hits_total",
                "Judge prompts that reused a shared prefix",
            )?,
            forward_errors: IntCounter::new(
                "self_judge_forward_errors_total",
                "Failed forward passes",
            )?,
        };
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.running_sequences.clone()))?;
        registry.register(Box::new(m.kv_bytes.clone()))?;
        registry.register(Box::new(m.batch_tokens.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.queue_prompts.clone()))?;
        registry.register(Box::new(m.prompts_scored.clone()))?;
        registry.register(Box::new(m.prompts_cancelled.clone()))?;
        registry.register(Box::new(m.generations_cancelled.clone()))?;
        registry.register(Box::new(m.generated_tokens.clone()))?;
        registry.register(Box::new(m.decode_batch_size.clone()))?;
        registry.register(Box::new(m.prefill_tokens.clone()))?;
        registry.register(Box::new(m.prefix_tokens_saved.clone()))?;
        registry.register(Box::new(m.prefix_hits.clone()))?;
        registry.register(Box::new(m.forward_errors.clone()))?;
        Ok(m)
    }
}

//! Execution on top of the decoder: sampling and batched generation (and, later, the
//! judge queue and prefix caches).

pub mod chunks;
pub mod generate;
pub mod judge_queue;
pub mod metrics;
pub mod prefix;
pub mod probs;
pub mod sampling;
pub mod scorer;
pub mod worker;

pub use generate::{generate, Emitted, FinishReason, Generated, GenerationRequest, Generator};
pub use metrics::EngineMetrics;
pub use sampling::{Sampler, SamplingParams, TokenLogprob};
pub use scorer::DirectScorer;
pub use worker::{spawn_engine, EngineError, EngineHandle, EngineSettings, GenEvent};

//! Execution on top of the decoder: sampling, batched generation, the judge queue and
//! prefix caches, and the engine thread that serves one base model and its adapters.

pub mod chunks;
pub mod error;
pub mod generate;
pub mod judge_queue;
pub mod lane;
pub mod metrics;
pub mod prefix;
pub mod probs;
pub mod sampling;
pub mod scorer;
pub mod settings;
pub mod worker;

pub use error::EngineError;
pub use generate::{generate, Emitted, FinishReason, Generated, GenerationRequest, Generator};
pub use lane::GenEvent;
pub use metrics::EngineMetrics;
pub use sampling::{Sampler, SamplingParams, TokenLogprob};
pub use scorer::DirectScorer;
pub use settings::EngineSettings;
pub use worker::{spawn_engine, EngineHandle};

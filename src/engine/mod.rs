//! Execution on top of the decoder: sampling and batched generation (and, later, the
//! judge queue and prefix caches).

pub mod generate;
pub mod sampling;
pub mod scorer;

pub use generate::{generate, FinishReason, Generated, GenerationRequest, Generator};
pub use sampling::{Sampler, SamplingParams};
pub use scorer::DirectScorer;

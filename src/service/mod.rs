//! The one façade between transports and the engine: a [`JudgeService`] owns the
//! limits and admission control, validates every request once, renders and tokenizes
//! prompts off the async runtime, and runs generations, pairs, tournaments and
//! best-of-n on the engine. The HTTP routes only translate HTTP to these calls and
//! back; any new transport (OpenAI-style routes, rerank) is written on top of it.

pub mod error;
pub mod facade;
pub mod generate;
pub mod judge;
pub mod kv_budget;
pub mod limits;
pub mod rerank;
pub mod stream;

pub use error::{Result, ServiceError};
pub use facade::{JudgeService, NamedAdapter};
pub use generate::{Generation, Generations, Prompt, SampleTokens, SamplingRequest};
pub use judge::{AdmittedTournament, BestOfN, BestOfNResult, RoundDone};
pub use kv_budget::{KvBudget, KvReservation};
pub use limits::Limits;
pub use rerank::{ranking, REFERENCE_ANSWER};
pub use stream::{GenerationStream, StreamEvent};

//! SELF-JUDGE: one language model as both policy and pairwise judge.
//!
//! - [`model`]: the Llama-family decoder (packed forward, KV cache, checkpoint loading).
//! - [`tokenizer`]: tokenizers and chat templates.
//! - [`judge`]: SELF-JUDGE prompts, verdicts and tournaments.
//! - [`engine`]: sampling, batched generation and judge-prompt execution.

pub mod cli;
pub mod engine;
pub mod judge;
pub mod model;
pub mod server;
pub mod tokenizer;

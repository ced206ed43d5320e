//! SELF-JUDGE: one language model as both policy and pairwise judge.
//!
//! The layers are crates of their own (each folder of `src/` with a `Cargo.toml`), so
//! Cargo forbids an import from a lower layer to a higher one:
//! - [`tokenizer`]: tokenizers and chat templates.
//! - [`model`]: the Llama-family decoder (packed forward, KV cache, checkpoint loading).
//! - [`judge`]: SELF-JUDGE prompts, verdicts and tournaments.
//! - [`engine`]: sampling, batched generation and judge-prompt execution.
//! - [`service`]: the façade transports call: limits, admission, validation, pairs,
//!   tournaments and best-of-n.
//!
//! This crate adds the transports on top: the HTTP [`server`] and the [`cli`].

pub use self_judge_engine as engine;
pub use self_judge_judge as judge;
pub use self_judge_model as model;
pub use self_judge_service as service;
pub use self_judge_tokenizer as tokenizer;

pub mod cli;
pub mod server;

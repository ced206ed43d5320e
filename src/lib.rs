//! SELF-JUDGE: one language model as both policy and pairwise judge.
//!
//! - [`model`]: the Llama-family decoder (packed forward, KV cache, checkpoint loading).
//! - [`tokenizer`]: tokenizers and chat templates.
//! - [`engine`]: sampling and batched generation.

pub mod cli;
pub mod engine;
pub mod model;
pub mod tokenizer;

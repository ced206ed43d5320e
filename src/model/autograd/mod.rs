//! Training ops with a backward of their own.
//!
//! Built from candle's primitives, a training forward keeps every intermediate of every
//! op alive until `backward()` ends (candle holds the whole graph), computes gradients
//! for frozen weights it then throws away (its matmul backward always computes both
//! sides), and runs many single-threaded elementwise passes. Each op here computes its
//! output with the inference kernels on detached inputs, so nothing of its inside is
//! kept, and attaches a backward written for it: the graph holds only the op's inputs
//! and output, and the backward recomputes what it needs (attention probabilities,
//! dropout masks, norms).
//!
//! The mechanism is candle's custom ops: the output, computed ahead, is handed over
//! once in the op's forward (one copy of the output on any device), and the op's `bwd`
//! is the hand-written backward. Where a backward has a CPU loop, the same math also
//! exists as device-generic tensor ops, and tests hold the two to each other and both
//! to finite differences.

mod attention;
pub(crate) mod custom;
mod entropy;
mod lora;
mod norm;
mod pointwise;

pub use attention::attention;
pub use entropy::target_log_probs;
pub use lora::{dropout_lora, frozen_linear, DropoutMask};
pub use norm::rms_norm;
pub use pointwise::{rope, silu_mul};

#[cfg(test)]
pub(crate) mod testing;

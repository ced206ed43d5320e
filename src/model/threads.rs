//! One thread pool for the CPU work of a process.
//!
//! candle runs its elementwise ops, copies and reductions on a barrier pool of its own,
//! while the packed projections, candle's GEMM and our fused and training loops run on
//! rayon's pool. On few cores the two pools take turns: each candle op's caller spins
//! until candle's worker finishes, while rayon's idle workers spin beside them (a
//! `perf` profile of the tiny JSFT run of `training/tests/jsft_learns.rs` spent 63% of
//! its samples in those spins). With one pool, candle's ops run on the calling thread
//! and everything parallel runs on rayon's.
//!
//! The trainer uses one pool. On a quiet 2-core machine it is as fast as two, and with
//! one other busy process beside it, it is much faster: the tiny JSFT run took 8.0-8.4 s
//! against 19.3-23.5 s, and a SmolLM2 LoRA step gave 137-144 against 103-115 tokens/s.
//! The server keeps candle's pool. Prefill measured the same either way, but decode at
//! batch 1 and 32 measured 5-8% slower with one pool, in a single quiet run
//! (bench/RESULTS.md).

/// The environment variable candle reads, once, to size its barrier pool.
pub const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Keeps candle's barrier pool out of this process (its ops run on the calling thread)
/// unless `CANDLE_NUM_THREADS` is already set. Call it first in `main`, before any other
/// thread exists and before the first tensor op: candle reads the variable once.
pub fn one_cpu_pool() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        std::env::set_var(CANDLE_THREADS_VAR, "1");
    }
}

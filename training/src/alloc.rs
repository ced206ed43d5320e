//! How the process allocator treats the large, short-lived buffers of a training step.
//!
//! A training step allocates and frees thousands of multi-megabyte tensors. glibc's
//! malloc serves large ones from fresh `mmap`s and returns them on free (its threshold
//! adapts only up to 32 MiB) and trims the heap top, so every step pays for the kernel
//! zeroing the same pages again (`perf`: `clear_page_erms`). Keeping freed memory in
//! the heap lets the next step reuse it: on full fine-tuning of SmolLM2-135M (8 x 256
//! tokens, 2 cores; `examples/train_profile.rs` without this call, the same two
//! settings given through `GLIBC_TUNABLES` or not, alternated twice) a step took
//! 12.0-12.7 s with them against 14.5-16.8 s without, and a run spent 22 s of system
//! time against 30-35 s. The peak stays the step's own peak.

/// Raises glibc's mmap threshold to its maximum and stops heap trimming. A no-op on
/// other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before the threads
    // of the training step exist.
    unsafe {
        // glibc's largest accepted threshold (HEAP_MAX_SIZE / 2 on 64-bit).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

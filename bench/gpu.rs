//! GPU judge-prefill benchmark on Llama-shaped decoders with random weights made on the
//! device (nothing to download), through the engine's own [`Decoder`] and A/B scoring.
//!
//! Prints JSON lines:
//! - `{"kind":"gemm", ...}`: the card's bf16 matmul peak, one large `[N,N] x [N,N]`
//!   product through candle (cuBLAS), best of `x·wᵀ` (the model's layout) and `x·w`.
//! - `{"kind":"prefill", ...}` per model and batch: packed batches of `--tokens` tokens
//!   made of `--seq-len`-token judge prompts, LM head at each last position only, then
//!   P(A)/P(B) (softmax in f32 on the device) back on the host. Timed from the packed
//!   batch to the probabilities on the host, after a device synchronize; median of
//!   `--iters` runs after one warm-up. `pairs_per_s` counts 2 prompts per pair (both
//!   orders, one principle). `mfu` = 2·(non-embedding params)·tokens/time / gemm peak
//!   (the FLOPs the projections really do: embedding rows are gathered, and the LM head
//!   runs at one position per prompt); `mfu_all_params` uses every parameter.
//!
//! Models (Llama architecture, Qwen2.5 dimensions, tied embeddings, vocab 151936):
//! `0.5b` hidden 896, 24 layers, 14 heads / 2 KV heads (head_dim 64), MLP 4864:
//! 494.0M params (357.9M without embeddings); `1.5b` hidden 1536, 28 layers, 12 / 2 heads
//! (head_dim 128), MLP 8960: 1543.7M (1310.3M).
//!
//! Run: `bench_gpu [--device cuda:0] [--models 0.5b,1.5b] [--tokens 8192,16384,32768,65536]
//!       [--seq-len 512] [--iters 3] [--gemm 8192] [--dtype bf16] [--no-fused]
//!       [--fast-bf16] [--no-event-tracking] [--attention per-sequence|batched|flash]
//!       [--profile]`
//! (`--no-fused`: candle's separate ops instead of our fused kernels, see
//! `Decoder::set_fused_kernels`: the previous path, for comparison);
//! `bench_gpu --device cpu --tiny` runs the same code on a tiny model (smoke test).

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use self_judge::engine::probs::ab_probs_rows;
use self_judge::model::weights::WeightSource;
use self_judge::model::{device_name, AttentionPath, Decoder, LoadOptions, Output, PackedBatch};

#[path = "random_model.rs"]
mod random_model;
use random_model::{params, shape_config, RandomSource};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Best bf16 (or `dtype`) matmul throughput in FLOP/s over `[n,n] x [n,n]`.
fn gemm_peak(n: usize, dtype: DType, device: &Device, iters: usize) -> anyhow::Result<f64> {
    let mut src = RandomSource::new(dtype, device)?;
    let a = src.tensor("a", &[n, n])?;
    let b = src.tensor("b", &[n, n])?;
    let mut best = 0f64;
    for transposed in [true, false] {
        let run = || -> anyhow::Result<Tensor> {
            Ok(if transposed {
                a.matmul(&b.t()?)?
            } else {
                a.matmul(&b)?
            })
        };
        // Warm up for half a second so the clocks rise, then time about a second.
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < 0.5 {
            run()?;
            device.synchronize()?;
        }
        let (t, mut done) = (Instant::now(), 0usize);
        while t.elapsed().as_secs_f64() < 1.0 || done < iters {
            for _ in 0..5 {
                run()?;
            }
            device.synchronize()?;
            done += 5;
        }
        let flops = 2.0 * (n as f64).powi(3) * done as f64 / t.elapsed().as_secs_f64();
        best = best.max(flops);
    }
    Ok(best)
}

/// `--profile`: cuProfilerStart/Stop around the last timed forward of each batch, so
/// that `ncu --profile-from-start off` records the model's kernels and nothing else.
#[cfg(feature = "cuda")]
fn profiler(start: bool) -> anyhow::Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    // Safe: no arguments; the profiler API only toggles collection for this context.
    let r = unsafe {
        if start {
            sys::cuProfilerStart()
        } else {
            sys::cuProfilerStop()
        }
    };
    Ok(r.result()?)
}

#[cfg(not(feature = "cuda"))]
fn profiler(_start: bool) -> anyhow::Result<()> {
    Ok(())
}

struct Args {
    device: Device,
    dtype: DType,
    tiny: bool,
    models: Vec<String>,
    tokens: Vec<usize>,
    seq_len: usize,
    iters: usize,
    gemm: usize,
    fused: bool,
    /// `None`: the decoder's own default for the model (flash where it can run).
    attention: Option<AttentionPath>,
    profile: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
    };
    let list = |s: &str| -> anyhow::Result<Vec<usize>> {
        s.split(',')
            .map(|x| x.trim().parse().context("bad number"))
            .collect()
    };
    let tiny = args.iter().any(|a| a == "--tiny");
    let LoadOptions { device, dtype, .. } = LoadOptions::from_flags(
        get("--device").map_or("cuda", |s| s.as_str()),
        get("--dtype").map(String::as_str),
        false,
    )?;
    // Default: the device's fastest path (flash where built with it), and the
    // accelerator's batched path in the CPU smoke run.
    let attention = match get("--attention") {
        Some(s) => Some(s.parse()?),
        None if device.is_cpu() => Some(AttentionPath::Batched),
        None => None,
    };
    let default_tokens = if tiny {
        "256,512"
    } else {
        "8192,16384,32768,65536"
    };
    Ok(Args {
        dtype,
        tiny,
        models: match (tiny, get("--models")) {
            (true, _) => vec!["tiny".into()],
            (false, Some(m)) => m.split(',').map(str::to_string).collect(),
            (false, None) => vec!["0.5b".into(), "1.5b".into()],
        },
        tokens: list(get("--tokens").map_or(default_tokens, |s| s.as_str()))?,
        seq_len: get("--seq-len").map_or(Ok(if tiny { 64 } else { 512 }), |s| s.parse())?,
        iters: get("--iters").map_or(Ok(3), |s| s.parse())?,
        gemm: get("--gemm").map_or(Ok(if tiny { 256 } else { 8192 }), |s| s.parse())?,
        fused: !args.iter().any(|a| a == "--no-fused"),
        attention,
        profile: args.iter().any(|a| a == "--profile"),
        device,
    })
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    // `--fast-bf16`: let cuBLAS reduce bf16 products in reduced precision
    // (CUBLAS_COMPUTE_32F_FAST_16BF), as the faster GEMM path candle offers.
    let fast_bf16 = std::env::args().any(|x| x == "--fast-bf16");
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_bf16(fast_bf16);
    // `--no-event-tracking`: cudarc makes two CUDA events per allocation to order uses
    // across streams; candle runs each thread on one stream, so the benchmark can
    // measure what they cost.
    let no_events = std::env::args().any(|x| x == "--no-event-tracking");
    #[cfg(feature = "cuda")]
    if let (true, Device::Cuda(d)) = (no_events, &a.device) {
        // Safe here: one thread, one stream, nothing shared with another stream.
        unsafe { d.disable_event_tracking() };
    }
    let dev = device_name(&a.device);
    let dt = format!("{:?}", a.dtype).to_lowercase();
    let peak = gemm_peak(a.gemm, a.dtype, &a.device, if a.tiny { 3 } else { 20 })?;
    println!(
        "{}",
        json!({"kind": "gemm", "device": dev, "dtype": dt, "n": a.gemm, "tflops": peak / 1e12, "fast_bf16": fast_bf16,
            "event_tracking": !no_events})
    );
    for name in &a.models {
        let cfg = shape_config(name)?;
        let (all, body) = params(&cfg);
        let t = Instant::now();
        let mut dec = Decoder::load(
            &cfg,
            &mut RandomSource::new(a.dtype, &a.device)?,
            a.dtype,
            &a.device,
        )?;
        if let Some(path) = a.attention {
            dec.set_attention_path(path)?;
        }
        dec.set_fused_kernels(a.fused);
        a.device.synchronize()?;
        let build_s = t.elapsed().as_secs_f64();
        let mut rng = StdRng::seed_from_u64(1);
        for &tokens in &a.tokens {
            let n_seqs = (tokens / a.seq_len).max(1);
            let seqs: Vec<Vec<u32>> = (0..n_seqs)
                .map(|_| {
                    (0..a.seq_len)
                        .map(|_| rng.random_range(0..cfg.vocab_size as u32))
                        .collect()
                })
                .collect();
            let mut times = Vec::new();
            for it in 0..=a.iters {
                a.device.synchronize()?;
                let profiled = a.profile && it == a.iters;
                if profiled {
                    profiler(true)?;
                }
                let t = Instant::now();
                let batch = PackedBatch::new(&seqs)?;
                let logits = dec.forward(&batch, None, Output::LastLogits)?;
                let probs = ab_probs_rows(&logits, 1, 2)?;
                a.device.synchronize()?;
                if profiled {
                    profiler(false)?;
                }
                anyhow::ensure!(
                    probs.iter().all(|p| p.p_a.is_finite() && p.p_b.is_finite()),
                    "non-finite probabilities"
                );
                if it > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            let s = median(times);
            let n_tok = (n_seqs * a.seq_len) as f64;
            println!(
                "{}",
                json!({"kind": "prefill", "device": dev, "dtype": dt, "model": name, "fast_bf16": fast_bf16,
                    "fused": a.fused,
                    "attention": format!("{:?}", dec.attention_path()), "event_tracking": !no_events,
                    "params": all, "params_non_embedding": body, "build_s": build_s,
                    "batch_tokens": n_seqs * a.seq_len, "seq_len": a.seq_len,
                    "prompts": n_seqs, "seconds": s, "tokens_per_s": n_tok / s,
                    "pairs_per_s": n_seqs as f64 / 2.0 / s,
                    "tflops": 2.0 * body as f64 * n_tok / s / 1e12,
                    "mfu": 2.0 * body as f64 * n_tok / s / peak,
                    "mfu_all_params": 2.0 * all as f64 * n_tok / s / peak})
            );
        }
    }
    Ok(())
}

//! Engine throughput on the real SmolLM2 model: prefill tokens/s for one prompt at a
//! time versus packed batches of 8 and 32 prompts (~300 tokens each), and decode
//! tokens/s at batch 1 and 8. Ratios are against batch-1 prefill measured in the same
//! run, so machine noise cancels.
//!
//! Run: `cargo run --release --example bench_engine -- [--model PATH] [--quantized]`

use std::path::PathBuf;
use std::time::Instant;

use self_judge::engine::{GenerationRequest, Generator, SamplingParams};
use self_judge::model::{Decoder, KvCache, LoadOptions, LoadedModel, Output, PackedBatch};

fn prompts(model: &LoadedModel, n: usize, target: usize) -> Vec<Vec<u32>> {
    let words = [
        "judge", "response", "helpful", "honest", "context", "river", "model", "answer",
        "question", "policy", "careful", "reason", "people", "history", "simple", "number",
    ];
    (0..n)
        .map(|i| {
            let mut text = String::new();
            let mut k = i * 7 + 3;
            loop {
                k = (k * 31 + 17) % 997;
                text.push_str(words[k % words.len()]);
                text.push(' ');
                let ids = model.tokenizer.encode(&text, true).unwrap();
                if ids.len() >= target {
                    return ids[..target].to_vec();
                }
            }
        })
        .collect()
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

/// Prefill tokens/s of 8 and 32 prompts of 300 tokens (last-position logits, the
/// judge's pass) with the fused CPU loops off and on, alternated `rounds` times; best
/// round of each, and their ratio.
fn prefill_fused(dec: &Decoder, ps: &[Vec<u32>], rounds: usize) -> anyhow::Result<()> {
    let mut off = dec.clone();
    off.set_fused_kernels(false);
    // BENCH_PREFILL_SEQS=32: one batch size only (for profiling).
    let sizes: Vec<usize> = match std::env::var("BENCH_PREFILL_SEQS") {
        Ok(s) => vec![s.parse()?],
        Err(_) => vec![8, 32],
    };
    for n in sizes {
        let (mut best_off, mut best_on) = (0f64, 0f64);
        for _ in 0..rounds.max(1) {
            for (d, best) in [(&off, &mut best_off), (dec, &mut best_on)] {
                let s = time(1, || {
                    d.last_logits(&ps[..n]).unwrap();
                });
                *best = best.max((300 * n) as f64 / s);
            }
        }
        println!(
            "prefill {n:2} x 300: candle ops {best_off:7.1} tok/s, fused loops {best_on:7.1} tok/s, ratio {:.2}",
            best_on / best_off
        );
    }
    Ok(())
}

/// Decode tokens/s of `n` sequences from 300-token prompts over 24 steps through
/// `Decoder::forward` over reserved, in-place caches (the path a generation takes), with
/// dense weights (candle's GEMM, the previous path) and with packed weights; alternated,
/// best of two each, so the order of the runs does not decide.
fn decode_pair(
    dense: &Decoder,
    packed: &Decoder,
    ps: &[Vec<u32>],
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    // BENCH_DECODE_STEPS and BENCH_PACKED_ONLY=1 (dense reported as 0): for profiling
    // the packed decode path alone.
    let steps: usize = std::env::var("BENCH_DECODE_STEPS").map_or(Ok(24), |s| s.parse())?;
    let dense_too = std::env::var("BENCH_PACKED_ONLY").is_err();
    let run = |dec: &Decoder| -> anyhow::Result<f64> {
        let layers = dec.cfg.num_hidden_layers;
        let prompts: Vec<&[u32]> = ps[..n].iter().map(|p| &p[..]).collect();
        let mut caches: Vec<KvCache> = (0..n).map(|_| KvCache::new(layers)).collect();
        dec.forward(
            &PackedBatch::new(&prompts)?,
            Some(&mut caches),
            Output::LastLogits,
        )?;
        for c in &mut caches {
            c.reserve(c.len() + steps);
        }
        let step = PackedBatch {
            tokens: vec![1; n],
            cu_seqlens: (0..=n).collect(),
        };
        let t = Instant::now();
        for _ in 0..steps {
            dec.forward(&step, Some(&mut caches), Output::LastLogits)?;
        }
        Ok((steps * n) as f64 / t.elapsed().as_secs_f64())
    };
    let (mut d, mut p) = (0f64, 0f64);
    for _ in 0..2 {
        if dense_too {
            d = d.max(run(dense)?);
        }
        p = p.max(run(packed)?);
    }
    Ok((d, p))
}

/// The decoder's projection shapes (q, k/v, o, gate/up, down, lm_head) with 1 to 2048
/// rows: candle's GEMM (which packs the weight on every call) vs the weight packed once
/// (`model::packed`), alternated, best of five each; GFLOP/s of each.
fn projections(dec: &Decoder) -> anyhow::Result<()> {
    use self_judge::model::packed::PackedWeight;
    let c = &dec.cfg;
    let (h, kv, i) = (
        c.hidden_size,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let shapes = [(h, h), (kv, h), (i, h), (h, i), (c.vocab_size, h)];
    let dev = candle_core::Device::Cpu;
    let weights: Vec<(candle_core::Tensor, PackedWeight)> = shapes
        .iter()
        .enumerate()
        .map(|(s, &(out, k))| {
            let w = self_judge::model::seeded_randn(s as u64, 0.0, 1.0, (out, k), &dev)?;
            let packed = PackedWeight::pack(&w.flatten_all()?.to_vec1::<f32>()?, out, k);
            Ok((w, packed))
        })
        .collect::<anyhow::Result<_>>()?;
    let rows: Vec<usize> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "1,2,4,8,16,32,64,128,512,2048".into())
        .split(',')
        .map(|r| r.parse())
        .collect::<Result<_, _>>()?;
    for m in rows {
        let (mut gemm_s, mut packed_s, mut flops) = (0f64, 0f64, 0f64);
        // The LM head only at few rows (a decode step's last positions).
        let take = if m > 64 { 4 } else { 5 };
        for ((w, packed), &(out, k)) in weights.iter().zip(&shapes).take(take) {
            let x = self_judge::model::seeded_randn(7, 0.0, 1.0, (m, k), &dev)?;
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let mut y = vec![0f32; m * out];
            let (mut g, mut p) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                let t = Instant::now();
                x.matmul(&w.t()?)?;
                g = g.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                packed.matmul_t(&xs, m, &mut y);
                p = p.min(t.elapsed().as_secs_f64());
            }
            gemm_s += g;
            packed_s += p;
            flops += 2.0 * (m * out * k) as f64;
        }
        println!(
            "projections, {m:4} rows: gemm {:8.2} ms ({:6.1} GFLOP/s), packed {:8.2} ms ({:6.1} GFLOP/s), ratio {:.2}",
            gemm_s * 1e3,
            flops / gemm_s / 1e9,
            packed_s * 1e3,
            flops / packed_s / 1e9,
            gemm_s / packed_s
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = args
        .iter()
        .position(|a| a == "--model")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let quantized = args.iter().any(|a| a == "--quantized");
    let model = LoadedModel::load(
        &model_path,
        &LoadOptions {
            quantized,
            ..Default::default()
        },
    )?;
    println!(
        "model {} ({} params, quantized={quantized}), threads {}",
        model_path.display(),
        model.decoder.cfg.num_parameters(),
        candle_core::utils::get_num_threads()
    );
    let ps = prompts(&model, 32, 300);
    let dec = &model.decoder;
    let mut dense = dec.clone();
    dense.unpack_weights()?;

    // BENCH_DECODE_ONLY=1,8,32: only the decode comparison at these batch sizes, with a
    // JSON line for bench/decode.
    let decode_only = std::env::var("BENCH_DECODE_ONLY").ok();
    if std::env::var("BENCH_PROJECTIONS").is_ok() {
        return projections(dec);
    }
    // BENCH_PREFILL_FUSED=ROUNDS: prefill of 8 and 32 x 300 tokens with the fused CPU
    // loops off (candle's ops, the previous path) and on, alternated, best round each.
    if let Ok(rounds) = std::env::var("BENCH_PREFILL_FUSED") {
        return prefill_fused(dec, &ps, rounds.parse()?);
    }
    if let Some(sizes) = &decode_only {
        let mut json = Vec::new();
        for n in sizes.split(',').map(str::parse::<usize>) {
            let n = n?;
            let (d, p) = decode_pair(&dense, dec, &ps, n)?;
            println!("decode batch {n:2}, 300-token prompts: dense {d:7.1} tok/s, packed {p:7.1} tok/s, ratio {:.2}", p / d);
            json.push(format!("\"{n}\": {p:.3}"));
        }
        println!("{{\"decode_tokens_per_s\": {{{}}}}}", json.join(", "));
        return Ok(());
    }
    let one = time(2, || {
        for p in &ps[..8] {
            dec.last_logits(&[p]).unwrap();
        }
    }) / 8.0;
    let base = 300.0 / one;
    println!("prefill batch 1         : {base:9.1} tok/s  ratio 1.00");
    for n in [8, 32] {
        let s = time(2, || {
            dec.last_logits(&ps[..n]).unwrap();
        });
        let tps = (300 * n) as f64 / s;
        println!(
            "prefill packed {n:2} x 300 : {tps:9.1} tok/s  ratio {:.2}",
            tps / base
        );
    }
    for n in [1, 8, 32] {
        let (d, p) = decode_pair(&dense, dec, &ps, n)?;
        println!(
            "decode batch {n:2}, 300-token prompts: dense {d:7.1} tok/s, packed {p:7.1} tok/s, ratio {:.2}",
            p / d
        );
    }
    for n in [1, 8, 32] {
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 32,
            ..Default::default()
        };
        let reqs: Vec<GenerationRequest> = ps[..n]
            .iter()
            .enumerate()
            .map(|(i, p)| GenerationRequest {
                request: i as u64,
                prompt_ids: p[..100].to_vec(),
                params: params.clone(),
                n: 1,
            })
            .collect();
        let mut g = Generator::new(&model);
        g.add(&reqs)?;
        let t = Instant::now();
        let mut steps = 0;
        while g.num_active() == n && steps < 31 {
            g.step()?;
            steps += 1;
        }
        let tps = (steps * n) as f64 / t.elapsed().as_secs_f64();
        println!("decode batch {n}          : {tps:9.1} tok/s  ({steps} steps)");
    }
    Ok(())
}

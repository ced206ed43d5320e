//! Engine throughput on the real SmolLM2 model: prefill tokens/s for one prompt at a
//! time versus packed batches of 8 and 32 prompts (~300 tokens each), and decode
//! tokens/s at batch 1 and 8. Ratios are against batch-1 prefill measured in the same
//! run, so machine noise cancels.
//!
//! Run: `cargo run --release --example bench_engine -- [--model PATH] [--quantized]`

use std::path::PathBuf;
use std::time::Instant;

use self_judge::engine::{GenerationRequest, Generator, SamplingParams};
use self_judge::model::{LoadOptions, LoadedModel};

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
    for n in [1, 8] {
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

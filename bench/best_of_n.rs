//! Our side of `bench/best_of_n`: the best-of-N workload end to end, offline. For each
//! of the first `--prompts` contexts of `bench/data/workload.json` (as one user message
//! in the model's chat template), sample `--n` answers of up to `--max-new-tokens`
//! tokens in one batched generation (the n samples of a prompt share its prefill), then
//! pick one per context by the judge's knockout tournament (shared-prefix KV cache).
//! Prints one JSON line: seconds of each phase, tokens generated, winners.
//!
//! `cargo build --release --example bench_best_of_n && target/release/examples/bench_best_of_n
//! [--model GGUF] [--config YAML] [--prompts 16] [--n 8] [--max-new-tokens 64]
//! [--temperature 1.0] [--seed 1]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use self_judge::engine::scorer::CachedScorer;
use self_judge::engine::{generate, GenerationRequest, SamplingParams};
use self_judge::judge::{run_tournament, Judge, JudgeConfig, JudgeOptions, Pair};
use self_judge::model::{LoadOptions, LoadedModel};
use self_judge::tokenizer::ChatMessage;
use serde_json::{json, Value};

fn arg<T: std::str::FromStr>(argv: &[String], key: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match argv.iter().position(|a| a == key) {
        None => Ok(default),
        Some(i) => {
            let v = argv
                .get(i + 1)
                .with_context(|| format!("{key} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{key} {v}: {e}"))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let model_path: PathBuf = arg(
        &argv,
        "--model",
        "models/SmolLM2-135M-Instruct.Q4_1.gguf".to_string(),
    )?
    .into();
    let config: PathBuf = arg(
        &argv,
        "--config",
        "configs/smollm2_hh_judge.yaml".to_string(),
    )?
    .into();
    let workload: PathBuf =
        arg(&argv, "--workload", "bench/data/workload.json".to_string())?.into();
    let prompts: usize = arg(&argv, "--prompts", 16)?;
    let n: usize = arg(&argv, "--n", 8)?;
    let max_new_tokens: usize = arg(&argv, "--max-new-tokens", 64)?;
    let temperature: f32 = arg(&argv, "--temperature", 1.0)?;
    let seed: u64 = arg(&argv, "--seed", 1)?;

    let model = LoadedModel::load(&model_path, &LoadOptions::default())?;
    let judge = Judge::new(
        &model,
        &JudgeConfig::from_file(&config)?,
        &JudgeOptions::default(),
    )?;
    let w: Value = serde_json::from_str(
        &std::fs::read_to_string(&workload).with_context(|| workload.display().to_string())?,
    )?;
    let contexts: Vec<String> = serde_json::from_value(w["contexts"].clone())?;
    anyhow::ensure!(
        (1..=contexts.len()).contains(&prompts),
        "--prompts must be 1..={}",
        contexts.len()
    );
    let contexts = contexts[..prompts].to_vec();
    let template = model.chat_template()?;
    let tok = &model.tokenizer;
    let reqs = contexts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let text = template.render(
                &[ChatMessage::new("user", c.clone())],
                true,
                tok.bos_token.as_deref(),
                tok.eos_token.as_deref(),
            )?;
            Ok(GenerationRequest {
                request: i as u64,
                prompt_ids: tok.encode(&text, true)?,
                params: SamplingParams {
                    temperature,
                    max_new_tokens,
                    seed: Some(seed + i as u64),
                    ..Default::default()
                },
                n,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Warm-up (thread pools, allocator) on one short generation and one pair.
    let warm = GenerationRequest {
        request: 0,
        prompt_ids: reqs[0].prompt_ids.clone(),
        params: SamplingParams {
            max_new_tokens: 2,
            ..reqs[0].params.clone()
        },
        n: 2,
    };
    generate(&model, &[warm])?;
    let warm_scorer = CachedScorer::new(&model.decoder, judge.token_ids, 8192, 0);
    judge.judge(
        &[Pair {
            context: "warm".into(),
            response_a: "up".into(),
            response_b: "now".into(),
        }],
        &warm_scorer,
    )?;

    let start = Instant::now();
    let samples = generate(&model, &reqs)?;
    let generation_s = start.elapsed().as_secs_f64();
    let generated_tokens: usize = samples.iter().flatten().map(|s| s.token_ids.len()).sum();
    let responses: Vec<Vec<String>> = samples
        .iter()
        .map(|g| g.iter().map(|s| s.text.clone()).collect())
        .collect();
    let scorer = CachedScorer::new(&model.decoder, judge.token_ids, 8192, 8 << 30);
    let t = Instant::now();
    let results = run_tournament(&contexts, &responses, Some(seed), |pairs| {
        judge.judge(pairs, &scorer)
    })?;
    let tournament_s = t.elapsed().as_secs_f64();
    let total_s = start.elapsed().as_secs_f64();
    let stats = scorer.stats();
    println!(
        "{}",
        json!({
            "side": "ours", "prompts": prompts, "n": n, "max_new_tokens": max_new_tokens,
            "temperature": temperature, "seconds": total_s, "generation_s": generation_s,
            "tournament_s": tournament_s, "generated_tokens": generated_tokens,
            "prompt_tokens": reqs.iter().map(|r| r.prompt_ids.len()).sum::<usize>(),
            "pairs": responses.iter().map(|r| r.len().saturating_sub(1)).sum::<usize>(),
            "judge_computed_tokens": stats.computed, "judge_reused_tokens": stats.reused,
            "winners": results.iter().map(|r| r.winner_index).collect::<Vec<_>>(),
            "threads": candle_core::utils::get_num_threads(),
        })
    );
    Ok(())
}

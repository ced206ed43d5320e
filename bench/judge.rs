//! Our side of `bench/judge`: judge throughput on the workload of
//! `bench/data/workload.json`, printed as one JSON line per run.
//!
//! - `--mode tournament`: a full tournament of `--candidates` for the first
//!   `--contexts` contexts (offline engine, shared-prefix KV);
//! - `--mode server --concurrency C --pairs M`: M single-pair `/judge` calls from C
//!   client threads against a `self-judge serve` child process;
//! - `--mode gemm`: the machine's f32 GEMM rate through candle, for reference.
//!
//! `--device cuda [--dtype bf16]` runs the tournament on a GPU; `--shape 0.5b|1.5b|
//! tiny-qwen --tokenizer DIR` judges with random weights of bench_gpu's shapes and the
//! tokenizer and chat template in DIR (tokenizer.json + tokenizer_config.json), in place
//! of `--model` (bench/gpu/run.sh: the GPU judge workload against
//! bench/reference/seed_judge.py with the same shape and tokenizer);
//! `--max-batch-tokens N` (default 8192) caps one forward pass.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use self_judge::engine::scorer::CachedScorer;
use self_judge::judge::{run_tournament, Judge, JudgeConfig, JudgeOptions, Pair, Scorer};
use self_judge::model::{device_name, Decoder, LoadOptions, LoadedModel, WeightFormat};
use self_judge::tokenizer::{ChatTemplate, TextTokenizer};
use serde_json::{json, Value};

#[path = "random_model.rs"]
mod random_model;

struct Args {
    model: PathBuf,
    config: PathBuf,
    workload: PathBuf,
    mode: String,
    contexts: usize,
    candidates: usize,
    seed: u64,
    quantized: bool,
    concurrency: usize,
    pairs: usize,
    device: String,
    dtype: Option<String>,
    shape: Option<String>,
    tokenizer: Option<PathBuf>,
    max_batch_tokens: usize,
}

fn parse() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        argv.iter()
            .position(|a| a == k)
            .map(|i| argv[i + 1].clone())
    };
    Args {
        model: get("--model")
            .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into())
            .into(),
        config: get("--config")
            .unwrap_or_else(|| "configs/smollm2_hh_judge.yaml".into())
            .into(),
        workload: get("--workload")
            .unwrap_or_else(|| "bench/data/workload.json".into())
            .into(),
        mode: get("--mode").unwrap_or_else(|| "tournament".into()),
        contexts: get("--contexts").map_or(16, |v| v.parse().unwrap()),
        candidates: get("--candidates").map_or(8, |v| v.parse().unwrap()),
        seed: get("--seed").map_or(1, |v| v.parse().unwrap()),
        quantized: argv.iter().any(|a| a == "--quantized"),
        concurrency: get("--concurrency").map_or(1, |v| v.parse().unwrap()),
        pairs: get("--pairs").map_or(32, |v| v.parse().unwrap()),
        device: get("--device").unwrap_or_else(|| "cpu".into()),
        dtype: get("--dtype"),
        shape: get("--shape"),
        tokenizer: get("--tokenizer").map(PathBuf::from),
        max_batch_tokens: get("--max-batch-tokens").map_or(8192, |v| v.parse().unwrap()),
    }
}

fn workload(a: &Args) -> (Vec<String>, Vec<Vec<String>>) {
    let w: Value =
        serde_json::from_str(&std::fs::read_to_string(&a.workload).expect("workload file"))
            .unwrap();
    let contexts: Vec<String> = serde_json::from_value(w["contexts"].clone()).unwrap();
    let cands: Vec<Vec<String>> = serde_json::from_value(w["candidates"].clone()).unwrap();
    (contexts, cands)
}

/// Counts what goes through a scorer.
struct Counting<'a> {
    inner: &'a CachedScorer<'a>,
    prompts: std::cell::Cell<usize>,
    naive_tokens: std::cell::Cell<usize>,
}

impl Scorer for Counting<'_> {
    fn score(
        &self,
        prompts: &[Vec<u32>],
    ) -> Result<Vec<self_judge::judge::OrderProbs>, self_judge::judge::JudgeError> {
        self.prompts.set(self.prompts.get() + prompts.len());
        self.naive_tokens
            .set(self.naive_tokens.get() + prompts.iter().map(Vec::len).sum::<usize>());
        self.inner.score(prompts)
    }
}

/// A model of random weights with one of bench_gpu's shapes and a real tokenizer.
fn random_model(a: &Args, shape: &str, opts: &LoadOptions) -> anyhow::Result<LoadedModel> {
    let cfg = random_model::shape_config(shape)?;
    let dir = a
        .tokenizer
        .as_ref()
        .context("--shape needs --tokenizer DIR (tokenizer.json, tokenizer_config.json)")?;
    let mut src = random_model::RandomSource::new(opts.dtype, &opts.device)?;
    let decoder = Decoder::load(&cfg, &mut src, opts.dtype, &opts.device)?;
    let (tokenizer, template) = TextTokenizer::from_hf_dir(dir, &cfg.eos_token_ids)?;
    anyhow::ensure!(
        tokenizer.vocab_size() <= cfg.vocab_size,
        "the tokenizer in {} has more tokens than the shape's vocabulary",
        dir.display()
    );
    let chat_template = template.as_deref().map(ChatTemplate::new).transpose()?;
    Ok(LoadedModel {
        decoder,
        tokenizer,
        chat_template,
        format: WeightFormat::Safetensors,
        path: dir.clone(),
        adapter: None,
    })
}

fn tournament(a: &Args) -> Value {
    let opts = LoadOptions::from_flags(&a.device, a.dtype.as_deref(), a.quantized).unwrap();
    let device = opts.device.clone();
    let model = match &a.shape {
        Some(shape) => random_model(a, shape, &opts).unwrap(),
        None => LoadedModel::load(&a.model, &opts).unwrap(),
    };
    let judge = Judge::new(
        &model,
        &JudgeConfig::from_file(&a.config).unwrap(),
        &JudgeOptions::default(),
    )
    .unwrap();
    let (contexts, cands) = workload(a);
    let contexts: Vec<String> = contexts.into_iter().take(a.contexts).collect();
    let responses: Vec<Vec<String>> = cands
        .into_iter()
        .take(a.contexts)
        .map(|c| c[..a.candidates].to_vec())
        .collect();
    // Warm-up on an unrelated pair so allocation and thread start-up are not timed.
    let warm = CachedScorer::new(&model.decoder, judge.token_ids, a.max_batch_tokens, 0);
    judge
        .judge(
            &[Pair {
                context: "warm".into(),
                response_a: "up".into(),
                response_b: "now".into(),
            }],
            &warm,
        )
        .unwrap();
    let scorer = CachedScorer::new(&model.decoder, judge.token_ids, a.max_batch_tokens, 8 << 30);
    let counting = Counting {
        inner: &scorer,
        prompts: 0.into(),
        naive_tokens: 0.into(),
    };
    let start = Instant::now();
    let results = run_tournament(&contexts, &responses, Some(a.seed), |pairs| {
        judge.judge(pairs, &counting)
    })
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let stats = scorer.stats();
    let pairs = responses.iter().map(|r| r.len() - 1).sum::<usize>();
    let params = model.decoder.cfg.num_parameters() as f64;
    json!({
        "mode": "tournament", "config": a.config, "contexts": contexts.len(), "candidates": a.candidates,
        "device": device_name(&device), "dtype": format!("{:?}", opts.dtype).to_lowercase(),
        "shape": a.shape, "max_batch_tokens": a.max_batch_tokens,
        "quantized": a.quantized, "pairs": pairs, "prompts": counting.prompts.get(),
        "naive_tokens": counting.naive_tokens.get(), "computed_tokens": stats.computed, "reused_tokens": stats.reused,
        "seconds": secs, "pairs_per_s": pairs as f64 / secs,
        "effective_gflops": 2.0 * params * stats.computed as f64 / secs / 1e9,
        // What the projections really do (embedding rows are gathered): for MFU on a GPU.
        "params_non_embedding": random_model::params(&model.decoder.cfg).1,
        "winners": results.iter().map(|r| r.winner_index).collect::<Vec<_>>(),
    })
}

fn server(a: &Args) -> Value {
    use std::io::BufRead;
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("self-judge");
    let mut child = std::process::Command::new(&exe)
        .args([
            "serve",
            "--port",
            "0",
            "--max-concurrent-requests",
            "100000",
            "--model",
        ])
        .arg(&a.model)
        .arg("--config")
        .arg(&a.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start target/release/self-judge (build it first)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    while client
        .get(format!("{base}/health"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (contexts, cands) = workload(a);
    let pairs: Vec<Value> = (0..a.pairs)
        .map(|i| {
            let c = i % contexts.len();
            let k = (2 * (i / contexts.len())) % cands[c].len();
            json!({"context": contexts[c], "response_a": cands[c][k], "response_b": cands[c][k + 1]})
        })
        .collect();
    // Warm-up.
    client
        .post(format!("{base}/judge"))
        .json(&json!({"context": "a", "response_a": "b", "response_b": "c"}))
        .send()
        .unwrap();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..a.concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pairs.len() {
                    break;
                }
                let r = client
                    .post(format!("{base}/judge"))
                    .json(&pairs[i])
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let _ = child.kill();
    let _ = child.wait();
    json!({
        "mode": "server", "config": a.config, "concurrency": a.concurrency, "pairs": a.pairs,
        "seconds": secs, "pairs_per_s": a.pairs as f64 / secs,
        "batches": metric("self_judge_batch_size_count"), "prompts": metric("self_judge_batch_size_sum"),
        "computed_tokens": metric("self_judge_prefill_tokens_total"), "reused_tokens": metric("self_judge_prefix_tokens_saved_total"),
    })
}

fn gemm() -> Value {
    let dev = Device::Cpu;
    let mut out = serde_json::Map::new();
    for (m, k, n) in [(2048usize, 576usize, 1536usize), (1024, 1024, 1024)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
        a.matmul(&b).unwrap();
        let reps = 10;
        let start = Instant::now();
        for _ in 0..reps {
            a.matmul(&b).unwrap();
        }
        let secs = start.elapsed().as_secs_f64() / reps as f64;
        out.insert(
            format!("gflops_{m}x{k}x{n}"),
            json!(2.0 * (m * k * n) as f64 / secs / 1e9),
        );
    }
    json!({"mode": "gemm", "candle": out, "threads": candle_core::utils::get_num_threads()})
}

fn main() {
    let a = parse();
    let v = match a.mode.as_str() {
        "tournament" => tournament(&a),
        "server" => server(&a),
        "gemm" => gemm(),
        other => panic!("unknown --mode {other}"),
    };
    println!("{v}");
}

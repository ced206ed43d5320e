//! Prints, as one JSON object, the JSFT examples a config builds (`input_ids`, `labels`)
//! and the example indices of every optimizer step's batch in the order `training jsft`
//! draws them (`Sampler` with the config's seed), so a reference implementation
//! (bench/train/reference.py) trains on exactly the same data.
//!
//! ```sh
//! cargo run --release -p training --example jsft_batches -- CONFIG.yaml > batches.json
//! ```

use anyhow::Context;
use training::data::jsft::{BuildStats, JsftBuilder};
use training::jsft::{chat_template, read_configs, read_jsonl};
use training::model::TrainModel;
use training::progress::{Progress, Sampler};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: jsft_batches CONFIG.yaml")?;
    let (cfg, judge) = read_configs(std::path::Path::new(&path))?;
    let model = TrainModel::load(&cfg.model_path, None)?;
    let (_, chat) = chat_template(&judge, &model)?;
    let builder = JsftBuilder::new(
        &model.tokenizer,
        &chat,
        &judge.template,
        cfg.max_length,
        &cfg.user_marker,
        &cfg.assistant_marker,
        cfg.skip_first_token,
    )?;
    let rows = read_jsonl(&cfg.dataset_path)?;
    let system = judge.template.principles[0].principle.system.clone();
    let examples = builder.hh(&rows, &system, &mut BuildStats::default())?;
    anyhow::ensure!(!examples.is_empty(), "no training examples");
    let a = &cfg.training;
    let per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps;
    let total = a.max_steps.context("the config must set max_steps")?;
    let mut sampler = Sampler::new(examples.len(), a.seed);
    let mut progress = Progress::default();
    let batches: Vec<Vec<usize>> = (0..total)
        .map(|_| (0..per_step).map(|_| sampler.next(&mut progress)).collect())
        .collect();
    let examples: Vec<serde_json::Value> = examples
        .iter()
        .map(|e| serde_json::json!({"input_ids": e.input_ids, "labels": e.labels}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"examples": examples, "batches": batches})
    );
    Ok(())
}

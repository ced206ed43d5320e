//! `training jsft`: judge-augmented supervised fine-tuning (SPEC §4), full fine-tuning
//! of every weight with AdamW, writing an HF checkpoint that `self-judge serve` loads.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use self_judge::judge::JudgeConfig;
use self_judge::tokenizer::ChatTemplate;
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::config::TrainConfig;
use crate::data::jsft::{BuildStats, JsftBuilder};
use crate::loss::{lm_loss, Example};
use crate::model::TrainModel;
use crate::optim::{clip_grads, AdamW, Schedule, ScheduleKind};

/// Reads a JSONL file; an invalid line is an error naming it.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading dataset {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))
        })
        .collect()
}

/// Runs JSFT as the config describes.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = TrainConfig::from_file(config)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let judge_cfg = JudgeConfig::from_yaml(&cfg.yaml)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let model = TrainModel::load(&cfg.model_path)
        .with_context(|| format!("loading {}", cfg.model_path.display()))?;
    let chat_src = judge_cfg
        .chat_template
        .clone()
        .or_else(|| model.chat_template.clone())
        .context("no chat template: set templates.chat or use a checkpoint that has one")?;
    let chat = ChatTemplate::new(&chat_src)?;
    let builder = JsftBuilder::new(
        &model.tokenizer,
        &chat,
        &judge_cfg.template,
        cfg.max_length,
        &cfg.user_marker,
        &cfg.assistant_marker,
        cfg.skip_first_token,
    )?;
    let rows = read_jsonl(&cfg.dataset_path)?;
    let system = judge_cfg.template.principles[0].principle.system.clone();
    let mut stats = BuildStats::default();
    let examples = builder.hh(&rows, &system, &mut stats)?;
    eprintln!(
        "{} rows -> {} SFT + {} judgment examples; skipped {} unmaskable examples and {} bad rows{}",
        stats.rows,
        stats.sft,
        stats.judgments,
        stats.unmaskable,
        stats.bad_rows,
        stats.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    anyhow::ensure!(!examples.is_empty(), "no training examples");
    let state = train(&model, &examples, &cfg)?;
    let out = &cfg.training.output_dir;
    Checkpoint {
        config: &model.decoder.cfg,
        weights: model.named_weights(),
        tokenizer: &model.tokenizer,
        chat_template: Some(&chat_src),
    }
    .save(out)?;
    std::fs::write(
        out.join("trainer_state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    eprintln!("saved {}", out.display());
    Ok(())
}

/// The optimisation loop; returns the HF-style trainer state (`log_history`, ...).
pub fn train(
    model: &TrainModel,
    examples: &[Example],
    cfg: &TrainConfig,
) -> anyhow::Result<serde_json::Value> {
    let a = &cfg.training;
    let per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps;
    let steps_per_epoch = examples.len().div_ceil(per_step);
    let total = a
        .max_steps
        .unwrap_or_else(|| (a.num_train_epochs * steps_per_epoch as f64).ceil() as usize)
        .max(1);
    let schedule = Schedule::new(
        ScheduleKind::parse(&a.lr_scheduler_type)?,
        a.learning_rate,
        total,
        a.warmup_steps,
        a.warmup_ratio,
    );
    let vars: Vec<candle_core::Var> = model.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(&vars, a.weight_decay)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    let mut log_history = Vec::new();
    let (mut window_loss, mut window_n, mut tokens) = (0f64, 0usize, 0usize);
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .expect("static template"),
    );
    let start = Instant::now();
    for step in 0..total {
        let mut batch: Vec<&Example> = Vec::with_capacity(per_step);
        while batch.len() < per_step {
            if cursor == order.len() {
                order = (0..examples.len()).collect();
                order.shuffle(&mut rng);
                cursor = 0;
            }
            batch.push(&examples[order[cursor]]);
            cursor += 1;
        }
        let targets: usize = batch.iter().map(|e| e.num_targets()).sum();
        let mut loss = None;
        for micro in batch.chunks(a.per_device_train_batch_size) {
            let l = lm_loss(&model.decoder, micro, targets)?;
            loss = Some(match loss {
                None => l,
                Some(acc) => (acc + l)?,
            });
            tokens += micro.iter().map(|e| e.input_ids.len()).sum::<usize>();
        }
        let loss = loss.expect("at least one micro-batch");
        let value = loss.to_scalar::<f32>()? as f64;
        let mut grads = loss.backward()?;
        let grad_norm = clip_grads(&vars, &mut grads, a.max_grad_norm)?;
        opt.update(&vars, &grads, schedule.lr_at(step))?;
        window_loss += value;
        window_n += 1;
        let done = step + 1;
        pb.set_position(done as u64);
        pb.set_message(format!(
            "loss {value:.4} {:.0} tok/s",
            tokens as f64 / start.elapsed().as_secs_f64()
        ));
        if done % a.logging_steps == 0 || done == total {
            log_history.push(json!({
                "loss": window_loss / window_n as f64,
                "grad_norm": grad_norm,
                "learning_rate": schedule.lr_at(done),
                "epoch": done as f64 / steps_per_epoch as f64,
                "step": done,
            }));
            window_loss = 0.0;
            window_n = 0;
        }
    }
    pb.finish_and_clear();
    Ok(json!({
        "global_step": total,
        "max_steps": total,
        "num_train_epochs": (total as f64 / steps_per_epoch as f64).ceil(),
        "epoch": total as f64 / steps_per_epoch as f64,
        "train_batch_size": a.per_device_train_batch_size,
        "logging_steps": a.logging_steps,
        "log_history": log_history,
        "train_tokens_per_second": tokens as f64 / start.elapsed().as_secs_f64(),
    }))
}

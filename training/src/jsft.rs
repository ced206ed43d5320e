//! `training jsft`: judge-augmented supervised fine-tuning (SPEC §4) of every weight or of
//! LoRA adapters with AdamW, writing an HF checkpoint that `self-judge serve` loads,
//! resumable from its `checkpoint-<step>` folders.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use self_judge::judge::JudgeConfig;
use self_judge::tokenizer::ChatTemplate;
use serde_json::json;

use crate::config::TrainConfig;
use crate::data::jsft::{BuildStats, JsftBuilder};
use crate::loss::{lm_loss, Example};
use crate::model::TrainModel;
use crate::optim::{clip_grads, AdamW, Schedule, ScheduleKind};
use crate::outputs::{latest_checkpoint, restore, RunInfo};
use crate::progress::{Progress, Sampler};

/// How one invocation runs beyond the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest `checkpoint-<step>` in `output_dir`.
    pub resume: bool,
    /// Stop after this many optimizer steps of this invocation, saving a checkpoint
    /// (time-boxed runs; interruption tests).
    pub stop_after: Option<usize>,
}

/// How a call to [`train`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// All steps done; the final model is in `output_dir`.
    Done(Progress),
    /// Stopped early by `stop_after`; resume from the checkpoint written.
    Stopped(Progress),
}

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

/// `max_length` limited to the model's context (with a warning when it is cut).
pub fn clamp_max_length(max_length: usize, model: &TrainModel) -> usize {
    let ctx = model.decoder.max_positions();
    if max_length > ctx {
        eprintln!("warning: max_length {max_length} exceeds the model's context; using {ctx}");
    }
    max_length.min(ctx)
}

/// Runs JSFT as the config describes.
pub fn run(config: &Path, opts: &RunOptions) -> anyhow::Result<()> {
    let cfg = TrainConfig::from_file(config)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let judge_cfg = JudgeConfig::from_yaml(&cfg.yaml)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let lora = cfg.lora.as_ref().map(|s| (s, cfg.training.seed));
    let model = TrainModel::load(&cfg.model_path, lora)
        .with_context(|| format!("loading {}", cfg.model_path.display()))?;
    let chat_src = judge_cfg
        .chat_template
        .clone()
        .or_else(|| model.chat_template.clone())
        .context("no chat template: set templates.chat or use a checkpoint that has one")?;
    let chat = ChatTemplate::new(&chat_src)?;
    let max_length = clamp_max_length(cfg.max_length, &model);
    let builder = JsftBuilder::new(
        &model.tokenizer,
        &chat,
        &judge_cfg.template,
        max_length,
        &cfg.user_marker,
        &cfg.assistant_marker,
        cfg.skip_first_token,
    )?;
    let rows = read_jsonl(&cfg.dataset_path)?;
    let system = judge_cfg.template.principles[0].principle.system.clone();
    let mut stats = BuildStats::default();
    let examples = match cfg.dataset.as_str() {
        "Anthropic/hh-rlhf" => builder.hh(&rows, &system, &mut stats)?,
        "openbmb/UltraFeedback" => builder
            .with_rationale(crate::data::uf::rationale_template(&cfg.yaml)?)
            .uf(&rows, cfg.training.seed, &mut stats)?,
        other => anyhow::bail!("`dataset: {other}` is for self-judge training, not JSFT"),
    };
    eprintln!(
        "{} rows -> {} SFT + {} judgment examples; skipped {} unmaskable examples, {} bad rows, {} rows without completions, {} without a strict comparison{}",
        stats.rows,
        stats.sft,
        stats.judgments,
        stats.unmaskable,
        stats.bad_rows,
        stats.empty_rows,
        stats.no_pair,
        stats.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    anyhow::ensure!(!examples.is_empty(), "no training examples");
    if let Some(l) = &cfg.lora {
        eprintln!(
            "LoRA r={} alpha={} dropout={} on {}: {} trainable parameters",
            l.r,
            l.alpha,
            l.dropout,
            l.target_modules.join(","),
            model.num_trainable()
        );
    }
    match train(&model, &examples, &cfg, &chat_src, opts)? {
        Finish::Done(_) => eprintln!("saved {}", cfg.training.output_dir.display()),
        Finish::Stopped(p) => eprintln!(
            "stopped after step {}; continue with --resume",
            p.global_step
        ),
    }
    Ok(())
}

/// The optimisation loop: trains, logs HF-style, saves checkpoints per `save_strategy`,
/// and writes the final model into `output_dir`.
pub fn train(
    model: &TrainModel,
    examples: &[Example],
    cfg: &TrainConfig,
    chat_template: &str,
    opts: &RunOptions,
) -> anyhow::Result<Finish> {
    let a = &cfg.training;
    let out = &a.output_dir;
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
    let save_every = match a.save_strategy.as_str() {
        "steps" => Some(a.save_steps.unwrap_or(500).max(1)),
        "epoch" => Some(steps_per_epoch),
        _ => None,
    };
    let info = RunInfo {
        model,
        chat_template,
        base_model: cfg.model_path.display().to_string(),
        steps_per_epoch,
        total_steps: total,
        batch_size: a.per_device_train_batch_size,
        logging_steps: a.logging_steps,
        save_steps: save_every,
        plot_keys: &["loss"],
    };
    let mut progress = Progress::default();
    if opts.resume {
        match latest_checkpoint(out)? {
            Some(ck) => {
                progress = restore(&ck, model, &mut opt)?;
                eprintln!(
                    "resuming from {} (step {})",
                    ck.display(),
                    progress.global_step
                );
            }
            None => eprintln!(
                "--resume: no checkpoint in {}, starting fresh",
                out.display()
            ),
        }
    }
    let mut sampler = Sampler::new(examples.len(), a.seed);
    if let Some(l) = &model.lora {
        l.set_training(true);
    }
    let first = progress.global_step;
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .expect("static template"),
    );
    pb.set_position(first as u64);
    let start = Instant::now();
    let start_tokens = progress.tokens;
    let tps = |p: &Progress| (p.tokens - start_tokens) as f64 / start.elapsed().as_secs_f64();
    for step in first..total {
        if opts.stop_after.is_some_and(|k| step - first == k) {
            pb.finish_and_clear();
            progress.dropout_counter = model.lora.as_ref().map_or(0, |l| l.dropout_counter());
            info.save_checkpoint(out, &opt, &progress, tps(&progress))?;
            return Ok(Finish::Stopped(progress));
        }
        let batch: Vec<&Example> = (0..per_step)
            .map(|_| &examples[sampler.next(&mut progress)])
            .collect();
        let targets: usize = batch.iter().map(|e| e.num_targets()).sum();
        let mut loss = None;
        for micro in batch.chunks(a.per_device_train_batch_size) {
            let l = lm_loss(&model.decoder, micro, targets)?;
            loss = Some(match loss {
                None => l,
                Some(acc) => (acc + l)?,
            });
            progress.tokens += micro.iter().map(|e| e.input_ids.len()).sum::<usize>();
        }
        let loss = loss.expect("at least one micro-batch");
        let value = loss.to_scalar::<f32>()? as f64;
        let mut grads = loss.backward()?;
        let grad_norm = clip_grads(&vars, &mut grads, a.max_grad_norm)?;
        opt.update(&vars, &grads, schedule.lr_at(step))?;
        let done = step + 1;
        progress.global_step = done;
        progress.accumulate(&[("loss", value)]);
        pb.set_position(done as u64);
        pb.set_message(format!("loss {value:.4} {:.0} tok/s", tps(&progress)));
        if done % a.logging_steps == 0 || done == total {
            let mut entry = json!({
                "grad_norm": grad_norm,
                "learning_rate": schedule.lr_at(done),
                "epoch": done as f64 / steps_per_epoch as f64,
                "step": done,
            });
            for (k, v) in progress.take_window() {
                entry[k] = v.into();
            }
            progress.log_history.push(entry);
        }
        if save_every.is_some_and(|s| done % s == 0) {
            progress.dropout_counter = model.lora.as_ref().map_or(0, |l| l.dropout_counter());
            info.save_checkpoint(out, &opt, &progress, tps(&progress))?;
        }
    }
    pb.finish_and_clear();
    if let Some(l) = &model.lora {
        l.set_training(false);
    }
    progress.dropout_counter = model.lora.as_ref().map_or(0, |l| l.dropout_counter());
    info.save_final(out, &progress, tps(&progress))?;
    Ok(Finish::Done(progress))
}

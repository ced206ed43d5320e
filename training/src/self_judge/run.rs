//! The self-judge command: config and data set-up, then the sample → judge → DPO loop.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use self_judge_judge::verdict::Side;
use self_judge_judge::JudgeConfig;
use self_judge_tokenizer::ChatTemplate;
use serde_json::json;

use super::dpo::{dpo_batch, merge_stats};
use super::onpolicy::OnPolicy;
use crate::config::TrainConfig;
use crate::data::jsft::BuildStats;
use crate::data::self_judge::{hh_rows, json_rows, uf_rows, SelfJudgeRow};
use crate::jsft::{chat_template, read_configs, read_jsonl};
use crate::loss::Example;
use crate::model::TrainModel;
use crate::trainer::{Finish, Loop, RunOptions};

/// Prompts evaluated when periodic evaluation has no `eval_dataset_path`.
const EVAL_SAMPLE: usize = 256;

fn rows_of(
    cfg: &TrainConfig,
    path: &Path,
    judge_cfg: &JudgeConfig,
    chat: &ChatTemplate,
    model: &TrainModel,
) -> anyhow::Result<Vec<SelfJudgeRow>> {
    let raw = read_jsonl(path)?;
    let mut stats = BuildStats::default();
    let system = &judge_cfg.template.principles[0].principle.system;
    let rows = match cfg.dataset.as_str() {
        "Anthropic/hh-rlhf" => hh_rows(&raw, system, chat, &model.tokenizer, &mut stats)?,
        "openbmb/UltraFeedback" => uf_rows(&raw, chat, &model.tokenizer, &mut stats)?,
        _ => json_rows(&raw, &mut stats),
    };
    if let Some(e) = &stats.first_error {
        anyhow::bail!("{}: {} bad rows; {e}", path.display(), stats.bad_rows);
    }
    anyhow::ensure!(!rows.is_empty(), "{}: no usable rows", path.display());
    Ok(rows)
}

/// Runs self-judge training as the config describes; `pairs_log` receives every judged
/// pair as JSON lines.
pub fn run(config: &Path, opts: &RunOptions, pairs_log: Option<&Path>) -> anyhow::Result<()> {
    let (mut cfg, judge_cfg) = read_configs(config)?;
    opts.apply_processes(&mut cfg.training);
    let mut args = cfg
        .self_judge
        .clone()
        .context("`self_judge_args` is missing: not a self-judge config")?;
    let adapter = cfg
        .peft_model_path
        .as_deref()
        .map(self_judge_model::LoraAdapter::read)
        .transpose()?;
    let mut lora = cfg.lora.clone();
    if args.disable_dropout {
        if let Some(l) = &mut lora {
            l.dropout = 0.0;
        }
    }
    let spec = lora.as_ref().map(|s| (s, cfg.training.seed));
    let mut model = TrainModel::load_with(&cfg.model_path, spec, adapter.as_ref(), &opts.device)
        .with_context(|| format!("loading {}", cfg.model_path.display()))?;
    model.set_gradient_checkpointing(cfg.training.gradient_checkpointing);
    if cfg.training.bf16 {
        model.use_bf16_compute()?;
    }
    args.max_length = crate::jsft::clamp_max_length(args.max_length, &model);
    anyhow::ensure!(
        args.max_new_tokens < args.max_length,
        "`self_judge_args.max_new_tokens` ({}) leaves no room for the query in max_length {}",
        args.max_new_tokens,
        args.max_length
    );
    // Without LoRA the reference is a frozen copy of the initial policy.
    let reference = match model.lora {
        Some(_) => None,
        None => {
            let mut r =
                TrainModel::load_with(&cfg.model_path, None, adapter.as_ref(), &opts.device)?;
            if cfg.training.bf16 {
                r.use_bf16_compute()?;
            }
            Some(r)
        }
    };
    let (chat_src, chat) = chat_template(&judge_cfg, &model)?;
    let op = OnPolicy::new(
        &model,
        reference.as_ref().map(|r| &r.decoder),
        &chat,
        &judge_cfg,
        &args,
    )?;
    anyhow::ensure!(
        cfg.datasets.len() == 1,
        "self-judge reads its prompts from one source: set `dataset_path` (or one entry of `datasets`)"
    );
    let rows = rows_of(&cfg, &cfg.dataset_path, &judge_cfg, &chat, &model)?;
    // Evaluation only when asked; without an evaluation set, a bounded seeded sample of
    // the training prompts (the seed evaluates nothing by default).
    let eval_rows = match &cfg.eval_dataset_path {
        _ if !cfg.training.evaluates(cfg.eval_dataset_path.is_some()) => Vec::new(),
        Some(p) => rows_of(&cfg, p, &judge_cfg, &chat, &model)?,
        None => {
            let mut r = rows.clone();
            r.shuffle(&mut StdRng::seed_from_u64(cfg.training.seed));
            r.truncate(EVAL_SAMPLE);
            r
        }
    };
    eprintln!(
        "{} prompts ({} for evaluation); judge token ids {:?}; loss {:?} beta {}",
        rows.len(),
        eval_rows.len(),
        op.judge.token_ids,
        args.loss_type,
        args.beta
    );
    let mut log = match pairs_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let finish = train(
        &op,
        &rows,
        &eval_rows,
        &cfg,
        &chat_src,
        opts,
        log.as_mut().map(|w| w as &mut dyn Write),
    )?;
    match finish {
        Finish::Done(_) => eprintln!("saved {}", cfg.training.output_dir.display()),
        Finish::Stopped(p) => eprintln!(
            "stopped after step {}; continue with --resume",
            p.global_step
        ),
    }
    Ok(())
}

/// Evaluation on the dataset's own chosen/rejected conversations (`eval_` metrics).
fn evaluate(
    op: &OnPolicy,
    rows: &[SelfJudgeRow],
    cfg: &TrainConfig,
) -> anyhow::Result<Vec<(String, f64)>> {
    let mut parts = Vec::new();
    for chunk in rows.chunks(cfg.training.per_device_train_batch_size) {
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        for r in chunk {
            chosen.push(op.text_sequence(&r.query, &r.chosen)?);
            rejected.push(op.text_sequence(&r.query, &r.rejected)?);
        }
        parts.push(dpo_batch(op, &chosen, &rejected, false)?.1);
    }
    Ok(merge_stats(parts).metrics("eval_"))
}

/// The training loop. Sampling is seeded per step, so a resumed run draws the same
/// samples as an uninterrupted one.
pub fn train(
    op: &OnPolicy,
    rows: &[SelfJudgeRow],
    eval_rows: &[SelfJudgeRow],
    cfg: &TrainConfig,
    chat_template: &str,
    opts: &RunOptions,
    mut pairs_log: Option<&mut dyn Write>,
) -> anyhow::Result<Finish> {
    let a = &cfg.training;
    let args = &op.args;
    let model = op.model;
    let plot = [
        "loss",
        "rewards/margins",
        "rewards/accuracies",
        "eval_rewards/margins",
    ];
    let mut run = Loop::new(model, rows.len(), cfg, chat_template, opts, &plot)?;
    let eval_entry = |run: &Loop| -> anyhow::Result<serde_json::Value> {
        let mut e = run.entry();
        for (k, v) in evaluate(op, eval_rows, cfg)? {
            e[k] = v.into();
        }
        Ok(e)
    };
    for step in run.steps() {
        if let Some(f) = run.stop_before(step)? {
            return Ok(f);
        }
        let batch: Vec<&SelfJudgeRow> = run.next_batch().into_iter().map(|i| &rows[i]).collect();
        let seed = a.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let samples = op.sample(&batch, seed)?;
        let judged = op.judge_samples(&batch, samples)?;
        let mut chosen: Vec<Example> = Vec::with_capacity(batch.len());
        let mut rejected: Vec<Example> = Vec::with_capacity(batch.len());
        for (row, jp) in batch.iter().zip(&judged) {
            let q = op.query_ids(&row.query)?;
            let (w, l) = jp.ordered();
            chosen.push(op.sequence(&q, w));
            rejected.push(op.sequence(&q, l));
            run.progress.tokens += chosen.last().map_or(0, |e| e.input_ids.len())
                + rejected.last().map_or(0, |e| e.input_ids.len());
            if let Some(w) = pairs_log.as_mut() {
                let v = &jp.verdict;
                let line = json!({
                    "step": step + 1,
                    "query": row.query,
                    "context": row.context,
                    "response_a": jp.texts[0],
                    "response_b": jp.texts[1],
                    "winner": if v.winner == Side::A { "a" } else { "b" },
                    "score_a": v.score_a,
                    "score_b": v.score_b,
                    "consistent": v.consistent,
                });
                writeln!(w, "{line}")?;
            }
        }
        // One backward per micro-batch, gradients summed (as JSFT): only one
        // micro-batch's graph is alive at a time.
        let mut grads = None;
        let mut parts = Vec::new();
        let bs = a.per_device_train_batch_size;
        for (c, r) in chosen.chunks(bs).zip(rejected.chunks(bs)) {
            let (sum, stats) = dpo_batch(op, c, r, !args.disable_dropout)?;
            let g = model.backward(&(sum / batch.len() as f64)?)?;
            grads = Some(match grads {
                None => g,
                Some(acc) => crate::jsft::add_grads(acc, g, &model.vars)?,
            });
            parts.push(stats);
        }
        let mut grads = grads.expect("at least one micro-batch");
        let mut metrics = merge_stats(parts).metrics("");
        let consistent = judged.iter().filter(|j| j.verdict.consistent).count();
        metrics.push((
            "judge/consistent".into(),
            consistent as f64 / judged.len() as f64,
        ));
        // The bar shows the loss and the reward margin first.
        metrics.swap(1, 4);
        let m: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        run.update(step, &mut grads, &m)?;
        let done = step + 1;
        let periodic = a.eval_every().is_some_and(|e| done.is_multiple_of(e));
        if !eval_rows.is_empty() && periodic && done < run.info.total_steps {
            let e = eval_entry(&run)?;
            run.log(e)?;
        }
        run.maybe_save()?;
    }
    if !eval_rows.is_empty() {
        let e = eval_entry(&run)?;
        eprintln!(
            "eval: loss {:.4} rewards/accuracies {:.3} rewards/margins {:.4}",
            e["eval_loss"], e["eval_rewards/accuracies"], e["eval_rewards/margins"]
        );
        run.log(e)?;
    }
    run.finish()
}

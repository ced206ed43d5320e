//! `training jsft`: judge-augmented supervised fine-tuning (SPEC §4) of every weight or of
//! LoRA adapters with AdamW, writing an HF checkpoint that `self-judge serve` loads,
//! resumable from its `checkpoint-<step>` folders.

use std::path::Path;

use anyhow::Context;
use candle_core::backprop::GradStore;
use candle_core::Var;
use self_judge_judge::JudgeConfig;
use self_judge_tokenizer::ChatTemplate;

use crate::config::{Role, TrainConfig};
use crate::data::jsft::{BuildStats, JsftBuilder};
use crate::loss::{lm_loss, Example};
use crate::model::TrainModel;
use crate::trainer::{Finish, Loop, RunOptions};
use self_judge_model::Pass;

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

/// Reads a training config and its judge section, printing the config's warnings.
pub fn read_configs(config: &Path) -> anyhow::Result<(TrainConfig, JudgeConfig)> {
    let cfg = TrainConfig::from_file(config)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let judge_cfg = cfg
        .judge_config()
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    Ok((cfg, judge_cfg))
}

/// The chat template (`templates.chat`, else the checkpoint's): its source, which the
/// saved tokenizer_config.json carries, and the compiled template.
pub fn chat_template(
    judge_cfg: &JudgeConfig,
    model: &TrainModel,
) -> anyhow::Result<(String, ChatTemplate)> {
    let src = judge_cfg
        .chat_template
        .clone()
        .or_else(|| model.chat_template.clone())
        .context("no chat template: set templates.chat or use a checkpoint that has one")?;
    let chat = ChatTemplate::new(&src)?;
    Ok((src, chat))
}

/// Runs JSFT as the config describes.
pub fn run(config: &Path, opts: &RunOptions) -> anyhow::Result<()> {
    let (mut cfg, judge_cfg) = read_configs(config)?;
    opts.apply_processes(&mut cfg.training);
    let lora = cfg.lora.as_ref().map(|s| (s, cfg.training.seed));
    let mut model = TrainModel::load_with(&cfg.model_path, lora, None, &opts.device)
        .with_context(|| format!("loading {}", cfg.model_path.display()))?;
    model.set_gradient_checkpointing(cfg.training.gradient_checkpointing);
    if cfg.training.bf16 {
        model.use_bf16_compute()?;
        eprintln!("bf16: projections compute in bf16; trained weights and AdamW moments stay f32");
    }
    let (chat_src, chat) = chat_template(&judge_cfg, &model)?;
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
    let system = judge_cfg.template.principles[0].principle.system.clone();
    let mut stats = BuildStats::default();
    let mut builder = builder.with_rationale(match cfg.dataset.as_str() {
        "openbmb/UltraFeedback" => cfg.rationale_template()?,
        _ => None,
    });
    let mut examples = Vec::new();
    // With `pair_orders` judgments come first, each one's two orders at indices (2k, 2k+1),
    // and the SFT examples after them, so the grouped sampler never splits a judgment.
    let mut sft_examples = Vec::new();
    let mut unpaired = 0;
    for source in &cfg.datasets {
        let rows = read_jsonl(&source.path)?;
        let parts: &[Role] = if cfg.pair_orders && source.role == Role::Both {
            &[Role::Judgments, Role::Sft]
        } else {
            std::slice::from_ref(&source.role)
        };
        for (k, &role) in parts.iter().enumerate() {
            builder = builder.with_role(role);
            let seen = (stats.rows, stats.bad_rows, stats.empty_rows);
            let before = stats.unmaskable;
            let built = match cfg.dataset.as_str() {
                "Anthropic/hh-rlhf" => builder.hh(&rows, &system, &mut stats)?,
                "openbmb/UltraFeedback" => builder.uf(&rows, cfg.training.seed, &mut stats)?,
                other => anyhow::bail!("`dataset: {other}` is for self-judge training, not JSFT"),
            };
            if k > 0 {
                // The second part reads the same rows again: count them once.
                (stats.rows, stats.bad_rows, stats.empty_rows) = seen;
            }
            if cfg.pair_orders && role == Role::Sft {
                sft_examples.extend(built);
            } else {
                if cfg.pair_orders {
                    unpaired += stats.unmaskable - before;
                }
                examples.extend(built);
            }
        }
    }
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
    if cfg.pair_orders {
        anyhow::ensure!(
            unpaired == 0 && examples.len().is_multiple_of(2),
            "`jsft_args.pair_orders`: {unpaired} judgment examples could not be built, so some judgments would lack one of their two orders"
        );
        if !sft_examples.len().is_multiple_of(2) {
            // Groups of two need an even count; one SFT example of many matters less than
            // splitting every later judgment pair.
            sft_examples.pop();
            eprintln!("pair_orders: the last SFT example is left out to keep groups of two");
        }
        examples.extend(sft_examples);
    }
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
    let mut run = Loop::new(model, examples.len(), cfg, chat_template, opts, &["loss"])?;
    if cfg.pair_orders {
        // The builder emits each judgment's two orders one after the other.
        run.group_examples(2)?;
    }
    let micro_size = cfg.training.per_device_train_batch_size;
    // LoRA dropout (`lora_dropout`) applies to the training passes only.
    let pass = Pass::Train { dropout: true };
    for step in run.steps() {
        if let Some(f) = run.stop_before(step)? {
            return Ok(f);
        }
        let batch: Vec<&Example> = run.next_batch().into_iter().map(|i| &examples[i]).collect();
        let targets: usize = batch.iter().map(|e| e.num_targets()).sum();
        // One backward per micro-batch, gradients summed: only one micro-batch's graph
        // is alive at a time, so accumulation bounds memory as it does in HF. Each
        // micro-loss is already divided by the whole batch's targets, so the sums are
        // the batch's loss and gradient.
        let mut value = 0.0;
        let mut grads: Option<GradStore> = None;
        for micro in batch.chunks(micro_size) {
            let l = lm_loss(&model.decoder, micro, targets, pass)?;
            value += l.to_scalar::<f32>()? as f64;
            let g = model.backward(&l)?;
            grads = Some(match grads {
                None => g,
                Some(acc) => add_grads(acc, g, &model.vars)?,
            });
            run.progress.tokens += micro.iter().map(|e| e.input_ids.len()).sum::<usize>();
        }
        let mut grads = grads.expect("at least one micro-batch");
        run.update(step, &mut grads, &[("loss", value)])?;
        run.maybe_save()?;
    }
    run.finish()
}

/// `acc + g` for the gradient of every trainable variable (a variable one micro-batch
/// does not reach has no entry there).
pub fn add_grads(
    mut acc: GradStore,
    mut g: GradStore,
    vars: &[(String, Var)],
) -> anyhow::Result<GradStore> {
    for (_, v) in vars {
        if let Some(x) = g.remove(v.as_tensor()) {
            let sum = match acc.remove(v.as_tensor()) {
                Some(a) => (a + x)?,
                None => x,
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok(acc)
}

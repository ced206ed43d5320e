//! The seed's training YAML, read strictly: unknown keys and wrong types are errors
//! naming the key; keys we accept but do not use get one warning each.

pub mod rationale;
pub mod raw;
pub mod self_judge_args;

use std::path::{Path, PathBuf};

use crate::lora::LoraSpec;
use raw::{RawConfig, RawDataset, RawPeft};
use self_judge_args::SelfJudgeArgs;
use self_judge_judge::config::TemplatesSection;
use self_judge_judge::JudgeConfig;
use self_judge_model::config_read::read;

/// Keys accepted for compatibility and ignored (with a warning).
const IGNORED: &[&str] = &[
    "training_args.remove_unused_columns",
    "training_args.fp16",
    "training_args.deepspeed",
    "training_args.run_name",
    "training_args.ddp_find_unused_parameters",
    "model.attn_implementation",
    "model.torch_dtype",
];

/// `training_args` (the HF TrainingArguments subset we implement).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingArgs {
    pub output_dir: PathBuf,
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub lr_scheduler_type: String,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<usize>,
    pub num_train_epochs: f64,
    pub max_steps: Option<usize>,
    pub logging_steps: usize,
    pub save_strategy: String,
    pub save_steps: Option<usize>,
    pub seed: u64,
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    /// Evaluate every this many steps (self-judge).
    pub eval_steps: Option<usize>,
    /// `eval_strategy`: `no` turns evaluation off, `steps` evaluates every `eval_steps`
    /// (default `logging_steps`); unset, an `eval_dataset_path` gets one final pass and
    /// `eval_steps` periodic ones.
    pub eval_strategy: Option<String>,
    /// Write TensorBoard event files (`report_to` names `tensorboard` or `all`) into
    /// this directory (`logging_dir`, default `output_dir/runs`).
    pub tensorboard_dir: Option<PathBuf>,
    /// `gradient_checkpointing`: keep only each layer's input in a training forward
    /// and recompute the layer in the backward (less memory, about one more forward).
    pub gradient_checkpointing: bool,
    /// `bf16`: mixed precision as in HF (autocast): projections compute in bf16,
    /// trained weights and optimizer moments stay f32 ([`crate::model::TrainModel::use_bf16_compute`]).
    pub bf16: bool,
}

impl TrainingArgs {
    /// Steps between evaluations, when evaluation runs periodically.
    pub fn eval_every(&self) -> Option<usize> {
        match self.eval_strategy.as_deref() {
            Some("no") => None,
            Some(_) => Some(self.eval_steps.unwrap_or(self.logging_steps)),
            None => self.eval_steps,
        }
    }

    /// Whether the run evaluates at all: only when asked, by an evaluation dataset or
    /// periodic evaluation, and never under `eval_strategy: no`.
    pub fn evaluates(&self, eval_dataset: bool) -> bool {
        self.eval_strategy.as_deref() != Some("no") && (eval_dataset || self.eval_every().is_some())
    }
}

/// Which JSFT examples a source contributes (SPEC §4: the seed trains SFT and
/// judgments on different HH splits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// SFT examples and judgment examples (the seed's single-dataset behaviour).
    Both,
    /// Only the SFT examples of the chosen conversations.
    Sft,
    /// Only judgment examples (both orders).
    Judgments,
}

impl Role {
    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "both" => Ok(Self::Both),
            "sft" => Ok(Self::Sft),
            "judgments" => Ok(Self::Judgments),
            other => {
                anyhow::bail!("`datasets[].role` must be both, sft or judgments, got {other:?}")
            }
        }
    }

    /// Whether SFT examples are built.
    pub fn sft(self) -> bool {
        self != Self::Judgments
    }

    /// Whether judgment examples are built.
    pub fn judgments(self) -> bool {
        self != Self::Sft
    }
}

/// One local JSONL file of training rows and what it is used for.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSource {
    pub path: PathBuf,
    pub role: Role,
}

/// `datasets: [{path, role}]` (role defaults to `both`).
fn dataset_sources(items: Vec<RawDataset>) -> anyhow::Result<Vec<DatasetSource>> {
    anyhow::ensure!(!items.is_empty(), "`datasets` is empty");
    items
        .into_iter()
        .map(|d| {
            Ok(DatasetSource {
                path: d.path,
                role: Role::parse(d.role.as_deref().unwrap_or("both"))?,
            })
        })
        .collect()
}

/// The parsed config with the warnings it produced.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub training: TrainingArgs,
    /// `jsft_args.max_length` or `self_judge_args.max_length`.
    pub max_length: usize,
    /// `jsft_args.pair_orders`: both orders of a judgment in the same micro-batch, so
    /// each step's gradient compares the two rather than learning the position prior.
    pub pair_orders: bool,
    /// `model.pretrained_model_name_or_path`.
    pub model_path: PathBuf,
    /// `dataset` (format name) and `dataset_path` (local JSONL): the first of
    /// `datasets` (self-judge reads exactly one source).
    pub dataset: String,
    pub dataset_path: PathBuf,
    /// Every source of training rows with its role: `datasets: [{path, role}]`, or
    /// `dataset_path` alone as one source of role `both`.
    pub datasets: Vec<DatasetSource>,
    /// The `templates` section (the judge's templates and the turn markers).
    pub templates: TemplatesSection,
    /// `self_judge_args.token_id_a` / `token_id_b`.
    pub judge_token_ids: (Option<usize>, Option<usize>),
    /// `max_length` as written (`self_judge_args` first), for the judge.
    judge_max_length: Option<usize>,
    pub skip_first_token: bool,
    pub user_marker: String,
    pub assistant_marker: String,
    /// `peft_config`: train LoRA adapters instead of every weight.
    pub lora: Option<LoraSpec>,
    /// `self_judge_args` (self-judge training only).
    pub self_judge: Option<SelfJudgeArgs>,
    /// `model.peft_model_name_or_path`: an adapter merged into the model before training.
    pub peft_model_path: Option<PathBuf>,
    /// `eval_dataset_path`: rows for the evaluation pass (self-judge).
    pub eval_dataset_path: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// `peft_config` as PEFT's `LoraConfig` (defaults r 8, alpha 8, dropout 0).
fn peft(p: RawPeft) -> anyhow::Result<LoraSpec> {
    if let Some(b) = p.bias {
        anyhow::ensure!(
            b == "none",
            "`peft_config.bias` must be \"none\", got {b:?}"
        );
    }
    if let Some(t) = p.task_type {
        anyhow::ensure!(
            t == "CAUSAL_LM",
            "`peft_config.task_type` must be CAUSAL_LM, got {t:?}"
        );
    }
    LoraSpec {
        r: p.r.unwrap_or(8),
        alpha: p.lora_alpha.unwrap_or(8.0),
        dropout: p.lora_dropout.unwrap_or(0.0),
        target_modules: p.target_modules.unwrap_or_else(LoraSpec::default_targets),
    }
    .validate()
}

/// Reads a derived config document: unknown keys are errors, the accepted-but-unused
/// ones warnings, each naming the key.
pub(crate) fn read_strict<T: serde::de::DeserializeOwned>(
    text: &str,
    ignored_ok: &[&str],
) -> anyhow::Result<(T, Vec<String>)> {
    let r = read::<T, _>(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut warnings = Vec::new();
    for key in r.ignored {
        anyhow::ensure!(ignored_ok.contains(&key.as_str()), "unknown key `{key}`");
        warnings.push(format!("`{key}` is accepted but not used"));
    }
    Ok((r.value, warnings))
}

impl TrainConfig {
    /// Reads a JSFT config; relative paths resolve against the current directory.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses a config document (once: the judge's part is built from it with
    /// [`TrainConfig::judge_config`]).
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let (raw, mut warnings): (RawConfig, _) = read_strict(text, IGNORED)?;
        let ta = raw.training_args;
        let mut tensorboard = false;
        for r in ta.report_to.iter().flatten() {
            match r.as_str() {
                "tensorboard" | "all" => tensorboard = true,
                "none" | "no" => {}
                other => warnings.push(format!(
                    "`training_args.report_to` {other:?} is not supported (only tensorboard): nothing is reported there"
                )),
            }
        }
        let tensorboard_dir = tensorboard.then(|| {
            ta.logging_dir
                .clone()
                .unwrap_or_else(|| ta.output_dir.join("runs"))
        });
        let training = TrainingArgs {
            output_dir: ta.output_dir,
            per_device_train_batch_size: ta.per_device_train_batch_size.unwrap_or(8).max(1),
            gradient_accumulation_steps: ta.gradient_accumulation_steps.unwrap_or(1).max(1),
            learning_rate: ta.learning_rate.unwrap_or(5e-5),
            lr_scheduler_type: ta.lr_scheduler_type.unwrap_or_else(|| "linear".into()),
            warmup_ratio: ta.warmup_ratio.unwrap_or(0.0),
            warmup_steps: ta.warmup_steps,
            num_train_epochs: ta.num_train_epochs.unwrap_or(3.0),
            max_steps: ta.max_steps.filter(|&m| m > 0),
            logging_steps: ta.logging_steps.unwrap_or(500).max(1),
            save_strategy: ta.save_strategy.unwrap_or_else(|| "steps".into()),
            save_steps: ta.save_steps,
            seed: ta.seed.unwrap_or(42) as u64,
            max_grad_norm: ta.max_grad_norm.unwrap_or(1.0),
            weight_decay: ta.weight_decay.unwrap_or(0.0),
            eval_steps: ta.eval_steps.filter(|&e| e > 0),
            eval_strategy: ta.eval_strategy,
            tensorboard_dir,
            gradient_checkpointing: ta.gradient_checkpointing.unwrap_or(false),
            bf16: ta.bf16.unwrap_or(false),
        };
        anyhow::ensure!(
            matches!(
                training.eval_strategy.as_deref(),
                None | Some("no" | "steps")
            ),
            "`training_args.eval_strategy` must be no or steps (epoch is not supported)"
        );
        crate::optim::ScheduleKind::parse(&training.lr_scheduler_type)?;
        anyhow::ensure!(
            ["epoch", "steps", "no"].contains(&training.save_strategy.as_str()),
            "`training_args.save_strategy` must be epoch, steps or no"
        );
        let pair_orders = raw
            .jsft_args
            .as_ref()
            .and_then(|j| j.pair_orders)
            .unwrap_or(false);
        let judge_token_ids = match &raw.self_judge_args {
            Some(a) => (a.token_id_a, a.token_id_b),
            None => (None, None),
        };
        let judge_max_length = [
            raw.self_judge_args.as_ref().and_then(|a| a.max_length),
            raw.jsft_args.as_ref().and_then(|j| j.max_length),
        ]
        .into_iter()
        .flatten()
        .next();
        let self_judge = raw
            .self_judge_args
            .map(SelfJudgeArgs::from_raw)
            .transpose()?;
        let max_length = match (&raw.jsft_args, &self_judge) {
            (_, Some(a)) => a.max_length,
            (Some(j), None) => j.max_length.unwrap_or(2048),
            (None, None) => 2048,
        };
        anyhow::ensure!(max_length >= 2, "`max_length` must be >= 2");
        let lora = raw.peft_config.map(peft).transpose()?;
        let dataset = raw.dataset.ok_or_else(|| {
            anyhow::anyhow!(
                "`dataset` must name the format (Anthropic/hh-rlhf or openbmb/UltraFeedback)"
            )
        })?;
        anyhow::ensure!(
            ["Anthropic/hh-rlhf", "openbmb/UltraFeedback", "self-judge"].contains(&dataset.as_str()),
            "dataset `{dataset}` is not supported (supported: Anthropic/hh-rlhf, openbmb/UltraFeedback, self-judge)"
        );
        let datasets = match (raw.dataset_path, raw.datasets) {
            (Some(_), Some(_)) => anyhow::bail!("set `dataset_path` or `datasets`, not both"),
            (Some(path), None) => vec![DatasetSource {
                path,
                role: Role::Both,
            }],
            (None, Some(items)) => dataset_sources(items)?,
            (None, None) => anyhow::bail!(
                "`dataset_path` (a local JSONL file) or `datasets: [{{path, role}}]` is missing"
            ),
        };
        let templates = raw.templates;
        let marker = |m: &Option<String>, key: &str| {
            m.clone()
                .ok_or_else(|| anyhow::anyhow!("`templates.{key}` is missing"))
        };
        Ok(Self {
            training,
            max_length,
            pair_orders,
            model_path: raw.model.pretrained_model_name_or_path,
            dataset,
            dataset_path: datasets[0].path.clone(),
            datasets,
            skip_first_token: templates.skip_first_token.unwrap_or(false),
            user_marker: marker(&templates.user, "user")?,
            assistant_marker: marker(&templates.assistant, "assistant")?,
            templates,
            judge_token_ids,
            judge_max_length,
            lora,
            self_judge,
            peft_model_path: raw.model.peft_model_name_or_path,
            eval_dataset_path: raw.eval_dataset_path,
            warnings,
        })
    }

    /// The judge's config from this file's `templates` and `self_judge_args`.
    pub fn judge_config(&self) -> anyhow::Result<JudgeConfig> {
        Ok(JudgeConfig::from_sections(
            &self.templates,
            self.judge_token_ids,
            self.judge_max_length,
        )?)
    }

    /// `templates.decision_rationale.rationale`, checked (UltraFeedback rationale rows).
    pub fn rationale_template(&self) -> anyhow::Result<Option<String>> {
        let Some(dr) = &self.templates.decision_rationale else {
            return Ok(None);
        };
        let r = dr.rationale.clone().ok_or_else(|| {
            anyhow::anyhow!("`templates.decision_rationale.rationale` is missing")
        })?;
        rationale::format_rationale(&r, "A")?;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests;

//! The seed's training YAML, read strictly: unknown keys and wrong types are errors
//! naming the key; keys we accept but do not use get one warning each.

pub mod self_judge_args;
pub mod yaml;

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::lora::LoraSpec;
use self_judge_args::SelfJudgeArgs;
use yaml::{boolean, int, num, string};

/// Keys accepted for compatibility and ignored (with a warning).
const IGNORED: &[&str] = &[
    "training_args.report_to",
    "training_args.gradient_checkpointing",
    "training_args.remove_unused_columns",
    "training_args.bf16",
    "training_args.fp16",
    "training_args.deepspeed",
    "training_args.logging_dir",
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

/// Reads `datasets: [{path, role}]` (role defaults to `both`).
fn dataset_sources(v: &Value) -> anyhow::Result<Vec<DatasetSource>> {
    let items = v
        .as_sequence()
        .ok_or_else(|| anyhow::anyhow!("`datasets` must be a list of {{path, role}}"))?;
    anyhow::ensure!(!items.is_empty(), "`datasets` is empty");
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let sec = format!("datasets[{i}]");
            let m = item
                .as_mapping()
                .ok_or_else(|| anyhow::anyhow!("`{sec}` must be a mapping {{path, role}}"))?;
            for k in m.keys() {
                let k = k.as_str().unwrap_or("");
                anyhow::ensure!(["path", "role"].contains(&k), "unknown key `{sec}.{k}`");
            }
            Ok(DatasetSource {
                path: string(m, &sec, "path")?
                    .ok_or_else(|| anyhow::anyhow!("`{sec}.path` is missing"))?
                    .into(),
                role: Role::parse(&string(m, &sec, "role")?.unwrap_or_else(|| "both".into()))?,
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
    /// The raw `templates` section (the judge module parses it).
    pub yaml: String,
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

/// Reads `peft_config` as PEFT's `LoraConfig` (defaults r 8, alpha 8, dropout 0).
fn peft(p: &Mapping) -> anyhow::Result<LoraSpec> {
    let s = "peft_config";
    if let Some(b) = string(p, s, "bias")? {
        anyhow::ensure!(
            b == "none",
            "`peft_config.bias` must be \"none\", got {b:?}"
        );
    }
    if let Some(t) = string(p, s, "task_type")? {
        anyhow::ensure!(
            t == "CAUSAL_LM",
            "`peft_config.task_type` must be CAUSAL_LM, got {t:?}"
        );
    }
    let target_modules = match p.get("target_modules") {
        None | Some(Value::Null) => LoraSpec::default_targets(),
        Some(Value::String(m)) => vec![m.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    anyhow::anyhow!("`peft_config.target_modules` must be a list of strings")
                })
            })
            .collect::<anyhow::Result<_>>()?,
        Some(other) => {
            anyhow::bail!("`peft_config.target_modules` must be a list of strings, got {other:?}")
        }
    };
    LoraSpec {
        r: int(p, s, "r")?.unwrap_or(8),
        alpha: num(p, s, "lora_alpha")?.unwrap_or(8.0),
        dropout: num(p, s, "lora_dropout")?.unwrap_or(0.0),
        target_modules,
    }
    .validate()
}

struct Reader<'a> {
    warnings: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn section<'m>(
        &mut self,
        root: &'m Mapping,
        name: &str,
        known: &[&str],
    ) -> anyhow::Result<Option<&'m Mapping>> {
        let Some(v) = root.get(name) else {
            return Ok(None);
        };
        let m = v
            .as_mapping()
            .ok_or_else(|| anyhow::anyhow!("`{name}` must be a mapping"))?;
        for k in m.keys() {
            let k = k
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("`{name}` has a non-string key {k:?}"))?;
            let full = format!("{name}.{k}");
            if IGNORED.contains(&full.as_str()) {
                self.warnings
                    .push(format!("`{full}` is accepted but not used"));
            } else if !known.contains(&k) {
                anyhow::bail!("unknown key `{full}`");
            }
        }
        Ok(Some(m))
    }
}

impl TrainConfig {
    /// Reads a JSFT config; relative paths resolve against the current directory.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses a JSFT config document.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("invalid YAML: {e}"))?;
        let root = doc
            .as_mapping()
            .ok_or_else(|| anyhow::anyhow!("the config must be a mapping"))?;
        for k in root.keys() {
            let k = k.as_str().unwrap_or("");
            if ![
                "training_args",
                "jsft_args",
                "self_judge_args",
                "peft_config",
                "model",
                "templates",
                "dataset",
                "dataset_path",
                "datasets",
                "eval_dataset_path",
            ]
            .contains(&k)
            {
                anyhow::bail!("unknown top-level key `{k}`");
            }
        }
        let mut warnings = Vec::new();
        let mut r = Reader {
            warnings: &mut warnings,
        };
        let ta = r
            .section(
                root,
                "training_args",
                &[
                    "output_dir",
                    "per_device_train_batch_size",
                    "gradient_accumulation_steps",
                    "learning_rate",
                    "lr_scheduler_type",
                    "warmup_ratio",
                    "warmup_steps",
                    "num_train_epochs",
                    "max_steps",
                    "logging_steps",
                    "save_strategy",
                    "save_steps",
                    "seed",
                    "max_grad_norm",
                    "weight_decay",
                    "eval_steps",
                    "eval_strategy",
                ],
            )?
            .ok_or_else(|| anyhow::anyhow!("`training_args` is missing"))?;
        let s = "training_args";
        let training = TrainingArgs {
            output_dir: string(ta, s, "output_dir")?
                .ok_or_else(|| anyhow::anyhow!("`training_args.output_dir` is missing"))?
                .into(),
            per_device_train_batch_size: int(ta, s, "per_device_train_batch_size")?
                .unwrap_or(8)
                .max(1),
            gradient_accumulation_steps: int(ta, s, "gradient_accumulation_steps")?
                .unwrap_or(1)
                .max(1),
            learning_rate: num(ta, s, "learning_rate")?.unwrap_or(5e-5),
            lr_scheduler_type: string(ta, s, "lr_scheduler_type")?
                .unwrap_or_else(|| "linear".into()),
            warmup_ratio: num(ta, s, "warmup_ratio")?.unwrap_or(0.0),
            warmup_steps: int(ta, s, "warmup_steps")?,
            num_train_epochs: num(ta, s, "num_train_epochs")?.unwrap_or(3.0),
            max_steps: int(ta, s, "max_steps")?.filter(|&m| m > 0),
            logging_steps: int(ta, s, "logging_steps")?.unwrap_or(500).max(1),
            save_strategy: string(ta, s, "save_strategy")?.unwrap_or_else(|| "steps".into()),
            save_steps: int(ta, s, "save_steps")?,
            seed: int(ta, s, "seed")?.unwrap_or(42) as u64,
            max_grad_norm: num(ta, s, "max_grad_norm")?.unwrap_or(1.0),
            weight_decay: num(ta, s, "weight_decay")?.unwrap_or(0.0),
            eval_steps: int(ta, s, "eval_steps")?.filter(|&e| e > 0),
            eval_strategy: string(ta, s, "eval_strategy")?,
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
        let ja = r.section(root, "jsft_args", &["max_length", "pair_orders"])?;
        let pair_orders = match ja {
            Some(m) => boolean(m, "jsft_args", "pair_orders")?.unwrap_or(false),
            None => false,
        };
        let sj = r.section(root, "self_judge_args", SelfJudgeArgs::KEYS)?;
        let self_judge = sj.map(SelfJudgeArgs::parse).transpose()?;
        let max_length = match (ja, &self_judge) {
            (_, Some(a)) => a.max_length,
            (Some(m), None) => int(m, "jsft_args", "max_length")?.unwrap_or(2048),
            (None, None) => 2048,
        };
        anyhow::ensure!(max_length >= 2, "`max_length` must be >= 2");
        let lora = match r.section(
            root,
            "peft_config",
            &[
                "r",
                "lora_alpha",
                "lora_dropout",
                "target_modules",
                "bias",
                "task_type",
            ],
        )? {
            None => None,
            Some(p) => Some(peft(p)?),
        };
        let model = r
            .section(
                root,
                "model",
                &["pretrained_model_name_or_path", "peft_model_name_or_path"],
            )?
            .ok_or_else(|| anyhow::anyhow!("`model` is missing"))?;
        let model_path = string(model, "model", "pretrained_model_name_or_path")?
            .ok_or_else(|| anyhow::anyhow!("`model.pretrained_model_name_or_path` is missing"))?;
        let peft_model_path = string(model, "model", "peft_model_name_or_path")?.map(PathBuf::from);
        let templates = r
            .section(
                root,
                "templates",
                &[
                    "skip_first_token",
                    "chat",
                    "user",
                    "assistant",
                    "judge",
                    "decision_rationale",
                ],
            )?
            .ok_or_else(|| anyhow::anyhow!("`templates` is missing"))?;
        let t = "templates";
        let dataset = match root.get("dataset") {
            Some(Value::String(s)) => s.clone(),
            _ => anyhow::bail!(
                "`dataset` must name the format (Anthropic/hh-rlhf or openbmb/UltraFeedback)"
            ),
        };
        anyhow::ensure!(
            ["Anthropic/hh-rlhf", "openbmb/UltraFeedback", "self-judge"].contains(&dataset.as_str()),
            "dataset `{dataset}` is not supported (supported: Anthropic/hh-rlhf, openbmb/UltraFeedback, self-judge)"
        );
        let datasets = match (root.get("dataset_path"), root.get("datasets")) {
            (Some(_), Some(_)) => anyhow::bail!("set `dataset_path` or `datasets`, not both"),
            (Some(Value::String(s)), None) => vec![DatasetSource {
                path: s.into(),
                role: Role::Both,
            }],
            (None, Some(v)) => dataset_sources(v)?,
            _ => anyhow::bail!(
                "`dataset_path` (a local JSONL file) or `datasets: [{{path, role}}]` is missing"
            ),
        };
        let dataset_path = datasets[0].path.clone();
        Ok(Self {
            training,
            max_length,
            pair_orders,
            model_path: model_path.into(),
            dataset,
            dataset_path,
            datasets,
            yaml: text.to_string(),
            skip_first_token: boolean(templates, t, "skip_first_token")?.unwrap_or(false),
            user_marker: string(templates, t, "user")?
                .ok_or_else(|| anyhow::anyhow!("`templates.user` is missing"))?,
            assistant_marker: string(templates, t, "assistant")?
                .ok_or_else(|| anyhow::anyhow!("`templates.assistant` is missing"))?,
            lora,
            self_judge,
            peft_model_path,
            eval_dataset_path: match root.get("eval_dataset_path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(PathBuf::from(s)),
                Some(other) => anyhow::bail!("`eval_dataset_path` must be a path, got {other:?}"),
            },
            warnings,
        })
    }
}

#[cfg(test)]
mod tests;

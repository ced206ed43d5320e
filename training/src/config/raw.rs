//! The training YAML as written (the seed's format), derived with serde: every key
//! appears once, here, with its type. Defaults and checks are applied in
//! [`super::TrainConfig::from_yaml`].

use std::path::PathBuf;

use serde::Deserialize;

use self_judge_judge::config::TemplatesSection;
use self_judge_model::config_read::{opt_count, opt_number, opt_strings};

/// `training_args` (the HF TrainingArguments subset we implement; the accepted but
/// unused ones are not declared, so they reach the ignored-key warnings).
#[derive(Debug, Deserialize)]
pub struct RawTrainingArgs {
    pub output_dir: PathBuf,
    #[serde(default, deserialize_with = "opt_count")]
    pub per_device_train_batch_size: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub gradient_accumulation_steps: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub learning_rate: Option<f64>,
    pub lr_scheduler_type: Option<String>,
    #[serde(default, deserialize_with = "opt_number")]
    pub warmup_ratio: Option<f64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub warmup_steps: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub num_train_epochs: Option<f64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub max_steps: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub logging_steps: Option<usize>,
    pub save_strategy: Option<String>,
    #[serde(default, deserialize_with = "opt_count")]
    pub save_steps: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub seed: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    pub weight_decay: Option<f64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub eval_steps: Option<usize>,
    pub eval_strategy: Option<String>,
    /// Integrations to report to (`tensorboard`, `all`, `none`; others are warned).
    #[serde(default, deserialize_with = "opt_strings")]
    pub report_to: Option<Vec<String>>,
    /// Where TensorBoard event files go (default `output_dir/runs`).
    pub logging_dir: Option<PathBuf>,
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    pub gradient_checkpointing: Option<bool>,
    /// Mixed precision: bf16 compute, f32 master weights.
    pub bf16: Option<bool>,
}

/// `jsft_args`.
#[derive(Debug, Deserialize)]
pub struct RawJsftArgs {
    #[serde(default, deserialize_with = "opt_count")]
    pub max_length: Option<usize>,
    pub pair_orders: Option<bool>,
}

/// `self_judge_args`: the seed's `SelfJudgeTrainer` keyword arguments.
#[derive(Debug, Deserialize)]
pub struct RawSelfJudgeArgs {
    /// Read by the judge (the ids of ` A` / ` B`).
    #[serde(default, deserialize_with = "opt_count")]
    pub token_id_a: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub token_id_b: Option<usize>,
    pub disable_dropout: Option<bool>,
    #[serde(default, deserialize_with = "opt_count")]
    pub judge_batch_size: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub max_length: Option<usize>,
    #[serde(default, deserialize_with = "opt_count")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub top_p: Option<f64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub top_k: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub temperature: Option<f64>,
    pub loss_type: Option<String>,
    #[serde(default, deserialize_with = "opt_number")]
    pub beta: Option<f64>,
    pub average_log_prob: Option<bool>,
    /// The seed's label value for positions without loss (a negative integer).
    #[serde(default, deserialize_with = "opt_number")]
    pub ignore_index: Option<f64>,
}

/// `peft_config` (PEFT's `LoraConfig`).
#[derive(Debug, Deserialize)]
pub struct RawPeft {
    #[serde(default, deserialize_with = "opt_count")]
    pub r: Option<usize>,
    #[serde(default, deserialize_with = "opt_number")]
    pub lora_alpha: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    pub lora_dropout: Option<f64>,
    #[serde(default, deserialize_with = "opt_strings")]
    pub target_modules: Option<Vec<String>>,
    pub bias: Option<String>,
    pub task_type: Option<String>,
}

/// `model` (the attention and dtype keys are accepted but unused).
#[derive(Debug, Deserialize)]
pub struct RawModel {
    pub pretrained_model_name_or_path: PathBuf,
    pub peft_model_name_or_path: Option<PathBuf>,
}

/// One entry of `datasets`.
#[derive(Debug, Deserialize)]
pub struct RawDataset {
    pub path: PathBuf,
    pub role: Option<String>,
}

/// The whole file.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub training_args: RawTrainingArgs,
    pub jsft_args: Option<RawJsftArgs>,
    pub self_judge_args: Option<RawSelfJudgeArgs>,
    pub peft_config: Option<RawPeft>,
    pub model: RawModel,
    pub templates: TemplatesSection,
    pub dataset: Option<String>,
    pub dataset_path: Option<PathBuf>,
    pub datasets: Option<Vec<RawDataset>>,
    pub eval_dataset_path: Option<PathBuf>,
}

/// The file of an `accelerate` launch (`configs/*_accelerate.yaml`): only the process
/// count matters on one device; the other keys describe the seed's cluster.
#[derive(Debug, Deserialize)]
pub struct RawAccelerate {
    #[serde(default, deserialize_with = "opt_count")]
    pub num_processes: Option<usize>,
}

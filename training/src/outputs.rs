//! What a run writes: the HF checkpoint the server loads (merged under LoRA) with the
//! PEFT adapter in `adapter/`, `trainer_state.json`, the loss plot, and resumable
//! `checkpoint-<step>` folders that add the optimizer moments and the run's progress.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use serde_json::{json, Value};

use crate::checkpoint::{atomic_dir, Checkpoint};
use crate::model::TrainModel;
use crate::optim::AdamW;
use crate::progress::Progress;

/// Names of the files inside a run checkpoint.
pub const PROGRESS_FILE: &str = "training_progress.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const ADAPTER_DIR: &str = "adapter";

/// The fixed facts of a run that go into every save.
pub struct RunInfo<'a> {
    pub model: &'a TrainModel,
    pub chat_template: &'a str,
    /// Where the base model came from (`base_model_name_or_path` of the adapter).
    pub base_model: String,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    pub batch_size: usize,
    pub logging_steps: usize,
    pub save_steps: Option<usize>,
    /// Log-history keys drawn in the plot (e.g. `loss`, `rewards/margins`).
    pub plot_keys: &'a [&'a str],
}

impl RunInfo<'_> {
    /// HF Trainer's `trainer_state.json` for `progress`.
    pub fn trainer_state(&self, progress: &Progress, tokens_per_second: f64) -> Value {
        let epoch = progress.global_step as f64 / self.steps_per_epoch as f64;
        json!({
            "global_step": progress.global_step,
            "max_steps": self.total_steps,
            "epoch": epoch,
            "num_train_epochs": (self.total_steps as f64 / self.steps_per_epoch as f64).ceil(),
            "train_batch_size": self.batch_size,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
            "log_history": progress.log_history,
            "train_tokens_per_second": tokens_per_second,
        })
    }

    /// Writes the model files (merged HF checkpoint, PEFT adapter under LoRA) into `dir`.
    fn write_model(&self, dir: &Path) -> anyhow::Result<()> {
        let m = self.model;
        Checkpoint {
            config: &m.decoder.cfg,
            weights: m.named_weights()?,
            tokenizer: &m.tokenizer,
            chat_template: Some(self.chat_template),
        }
        .write_into(dir)?;
        if let Some(a) = &m.lora {
            a.save(&dir.join(ADAPTER_DIR), &self.base_model)?;
        }
        Ok(())
    }

    fn write_state(&self, dir: &Path, progress: &Progress, tps: f64) -> anyhow::Result<()> {
        let state = self.trainer_state(progress, tps);
        std::fs::write(
            dir.join("trainer_state.json"),
            serde_json::to_string_pretty(&state)?,
        )?;
        crate::plot::history_png(&progress.log_history, self.plot_keys, &dir.join("loss.png"))
    }

    /// Writes `out/checkpoint-<step>` atomically: model, optimizer moments, progress.
    pub fn save_checkpoint(
        &self,
        out: &Path,
        opt: &AdamW,
        progress: &Progress,
        tps: f64,
    ) -> anyhow::Result<PathBuf> {
        let dir = out.join(format!("checkpoint-{}", progress.global_step));
        atomic_dir(&dir, |tmp| {
            self.write_model(tmp)?;
            self.write_state(tmp, progress, tps)?;
            let names: Vec<String> = self.model.vars.iter().map(|(n, _)| n.clone()).collect();
            candle_core::safetensors::save(&opt.state_tensors(&names), tmp.join(OPTIMIZER_FILE))?;
            std::fs::write(tmp.join(PROGRESS_FILE), serde_json::to_string(progress)?)?;
            Ok(())
        })?;
        Ok(dir)
    }

    /// Writes the final model into `out` next to its checkpoints: files are written to a
    /// temporary folder and renamed in one by one, `config.json` last.
    pub fn save_final(&self, out: &Path, progress: &Progress, tps: f64) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let tmp = out.join(format!(".final.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        self.write_model(&tmp)?;
        self.write_state(&tmp, progress, tps)?;
        let mut names: Vec<_> = std::fs::read_dir(&tmp)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by_key(|n| n == "config.json");
        for n in names {
            let dst = out.join(&n);
            if dst.is_dir() {
                std::fs::remove_dir_all(&dst)?;
            }
            std::fs::rename(tmp.join(&n), dst)?;
        }
        std::fs::remove_dir_all(&tmp)?;
        Ok(())
    }
}

/// The newest complete `checkpoint-<step>` folder in `out`, if any (temporary folders of
/// an interrupted save are ignored).
pub fn latest_checkpoint(out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(None);
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if e.path().join(PROGRESS_FILE).exists() && best.as_ref().is_none_or(|(s, _)| step > *s) {
            best = Some((step, e.path()));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Reads a checkpoint's progress and optimizer moments into `progress` and `opt`.
pub fn restore(ckpt: &Path, model: &TrainModel, opt: &mut AdamW) -> anyhow::Result<Progress> {
    let text = std::fs::read_to_string(ckpt.join(PROGRESS_FILE))
        .with_context(|| format!("reading {}", ckpt.join(PROGRESS_FILE).display()))?;
    let progress: Progress = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", ckpt.join(PROGRESS_FILE).display()))?;
    let saved = candle_core::safetensors::load(ckpt.join(OPTIMIZER_FILE), &Device::Cpu)
        .with_context(|| format!("reading {}", ckpt.join(OPTIMIZER_FILE).display()))?;
    let names: Vec<String> = model.vars.iter().map(|(n, _)| n.clone()).collect();
    opt.load_state(&names, &saved, progress.global_step)?;
    if let Some(a) = &model.lora {
        a.load_weights(&ckpt.join(ADAPTER_DIR))?;
        a.set_dropout_counter(progress.dropout_counter);
    } else {
        let file = ckpt.join("model.safetensors");
        let weights = candle_core::safetensors::load(&file, &Device::Cpu)
            .with_context(|| format!("reading {}", file.display()))?;
        for (n, v) in &model.vars {
            let t = weights
                .get(n)
                .with_context(|| format!("{}: missing {n}", file.display()))?;
            anyhow::ensure!(
                t.dims() == v.dims(),
                "{}: {n} has another shape",
                file.display()
            );
            v.set(&t.to_device(v.device())?)?;
        }
    }
    Ok(progress)
}

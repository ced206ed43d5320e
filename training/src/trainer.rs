//! The loop machinery JSFT and self-judge share: the step plan from `training_args`,
//! resuming, the optimizer step with clipping and the schedule, HF-style logging, the
//! progress bar, checkpoints per `save_strategy` and the final save.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Var;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::config::TrainConfig;
use crate::model::TrainModel;
use crate::optim::{clip_grads, AdamW, Schedule, ScheduleKind};
use crate::outputs::{latest_checkpoint, restore, RunInfo};
use crate::progress::{Progress, Sampler};
use crate::tensorboard::{entry_scalars, EventWriter};

/// How one invocation runs beyond the config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the newest `checkpoint-<step>` in `output_dir`.
    pub resume: bool,
    /// Stop after this many optimizer steps of this invocation, saving a checkpoint
    /// (time-boxed runs; interruption tests).
    pub stop_after: Option<usize>,
    /// The data-parallel processes the config was written for (`accelerate launch`'s
    /// `num_processes`); see [`RunOptions::apply_processes`].
    pub num_processes: Option<usize>,
    /// Where the model trains (`--device`; the CPU by default).
    pub device: candle_core::Device,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            resume: false,
            stop_after: None,
            num_processes: None,
            device: candle_core::Device::Cpu,
        }
    }
}

impl RunOptions {
    /// Gives one device the global batch of `num_processes` processes: the seed's
    /// `accelerate` files run 8, so its step count and learning-rate schedule come from
    /// `per_device_train_batch_size x gradient_accumulation_steps x 8` examples per step.
    /// Here that many examples go through gradient accumulation instead.
    pub fn apply_processes(&self, t: &mut crate::config::TrainingArgs) {
        let n = self.num_processes.unwrap_or(1);
        if n > 1 {
            t.gradient_accumulation_steps *= n;
            eprintln!(
                "{n} processes: global batch {} = {} per device x {} accumulation steps on this one device",
                t.per_device_train_batch_size * t.gradient_accumulation_steps,
                t.per_device_train_batch_size,
                t.gradient_accumulation_steps
            );
        }
    }
}

/// `num_processes` of an `accelerate` config file (the seed's `configs/*_accelerate.yaml`).
pub fn accelerate_processes(path: &std::path::Path) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let raw: crate::config::raw::RawAccelerate =
        self_judge_model::config_read::read(serde_yaml_ng::Deserializer::from_str(&text))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .value;
    match raw.num_processes {
        Some(n) if n > 0 => Ok(n),
        _ => anyhow::bail!(
            "{}: `num_processes` must be a positive integer",
            path.display()
        ),
    }
}

/// How a training run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// All steps done; the final model is in `output_dir`.
    Done(Progress),
    /// Stopped early by `stop_after`; resume from the checkpoint written.
    Stopped(Progress),
}

/// One run's optimizer, schedule, position and outputs.
pub struct Loop<'a> {
    pub info: RunInfo<'a>,
    pub progress: Progress,
    cfg: &'a TrainConfig,
    opts: RunOptions,
    schedule: Schedule,
    vars: Vec<Var>,
    opt: AdamW,
    sampler: Sampler,
    /// Items per optimizer step (batch size x accumulation steps).
    pub per_step: usize,
    first: usize,
    pb: ProgressBar,
    start: Instant,
    start_tokens: usize,
    /// TensorBoard event file, when `report_to` asks for one.
    tensorboard: Option<EventWriter>,
}

impl<'a> Loop<'a> {
    /// Plans `n_items` items per pass (steps from `max_steps` or `num_train_epochs`) and
    /// restores the newest checkpoint with `--resume`.
    pub fn new(
        model: &'a TrainModel,
        n_items: usize,
        cfg: &'a TrainConfig,
        chat_template: &'a str,
        opts: &RunOptions,
        plot_keys: &'a [&'a str],
    ) -> anyhow::Result<Self> {
        let a = &cfg.training;
        let per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps;
        let steps_per_epoch = n_items.div_ceil(per_step);
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
        let vars: Vec<Var> = model.vars.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = AdamW::for_named(&model.vars, a.weight_decay)?;
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
            plot_keys,
        };
        let out = &a.output_dir;
        let mut progress = Progress::default();
        if opts.resume {
            match latest_checkpoint(out)? {
                Some(ck) => {
                    progress = restore(&ck, model, &mut opt)?;
                    let step = progress.global_step;
                    eprintln!("resuming from {} (step {step})", ck.display());
                }
                None => eprintln!(
                    "--resume: no checkpoint in {}, starting fresh",
                    out.display()
                ),
            }
        }
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
                .expect("static template"),
        );
        pb.set_position(progress.global_step as u64);
        Ok(Self {
            info,
            first: progress.global_step,
            start_tokens: progress.tokens,
            progress,
            cfg,
            opts: opts.clone(),
            schedule,
            vars,
            opt,
            sampler: Sampler::new(n_items, a.seed),
            per_step,
            pb,
            start: Instant::now(),
            tensorboard: match &a.tensorboard_dir {
                Some(dir) => Some(EventWriter::create(dir)?),
                None => None,
            },
        })
    }

    /// Draws examples in groups of `group` consecutive indices (see
    /// [`Sampler::grouped`]); call before the first step.
    pub fn group_examples(&mut self, group: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.per_step.is_multiple_of(group)
                && self
                    .cfg
                    .training
                    .per_device_train_batch_size
                    .is_multiple_of(group),
            "per_device_train_batch_size must be a multiple of {group} to keep groups together"
        );
        self.sampler = Sampler::grouped(self.sampler.len(), self.cfg.training.seed, group)?;
        Ok(())
    }

    /// The optimizer steps still to run.
    pub fn steps(&self) -> std::ops::Range<usize> {
        self.first..self.info.total_steps
    }

    /// Training tokens per second in this invocation.
    pub fn tokens_per_second(&self) -> f64 {
        (self.progress.tokens - self.start_tokens) as f64 / self.start.elapsed().as_secs_f64()
    }

    fn sync_dropout(&mut self) {
        self.progress.dropout_counter = self
            .info
            .model
            .lora
            .as_ref()
            .map_or(0, |l| l.dropout_counter());
    }

    /// With `--stop-after`, saves a checkpoint and returns the finish when `step` is the
    /// first step not to run.
    pub fn stop_before(&mut self, step: usize) -> anyhow::Result<Option<Finish>> {
        if self.opts.stop_after.is_none_or(|k| step - self.first != k) {
            return Ok(None);
        }
        self.pb.finish_and_clear();
        self.sync_dropout();
        let out = &self.cfg.training.output_dir;
        self.info
            .save_checkpoint(out, &self.opt, &self.progress, self.tokens_per_second())?;
        Ok(Some(Finish::Stopped(self.progress.clone())))
    }

    /// The item indices of the next step's batch.
    pub fn next_batch(&mut self) -> Vec<usize> {
        (0..self.per_step)
            .map(|_| self.sampler.next(&mut self.progress))
            .collect()
    }

    /// Clips, updates, records `metrics` (the first two are shown in the bar) and logs
    /// every `logging_steps`.
    pub fn update(
        &mut self,
        step: usize,
        grads: &mut GradStore,
        metrics: &[(&str, f64)],
    ) -> anyhow::Result<()> {
        let a = &self.cfg.training;
        let grad_norm = clip_grads(&self.vars, grads, a.max_grad_norm)?;
        self.opt
            .update(&self.vars, grads, self.schedule.lr_at(step))?;
        let done = step + 1;
        self.progress.global_step = done;
        self.progress.accumulate(metrics);
        self.pb.set_position(done as u64);
        let shown: Vec<String> = metrics
            .iter()
            .take(2)
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        self.pb.set_message(format!(
            "{} {:.0} tok/s",
            shown.join(" "),
            self.tokens_per_second()
        ));
        if done.is_multiple_of(a.logging_steps) || done == self.info.total_steps {
            let mut entry = self.entry();
            entry["grad_norm"] = grad_norm.into();
            entry["learning_rate"] = self.schedule.lr_at(done).into();
            for (k, v) in self.progress.take_window() {
                entry[k] = v.into();
            }
            if self.pb.is_hidden() {
                // No terminal (a log file, CI): the bar draws nothing, so each logging
                // step becomes one line, as HF's Trainer prints it.
                eprintln!("{}", self.log_line(&entry, done));
            }
            self.log(entry)?;
        }
        Ok(())
    }

    /// Records one log-history entry (a logging step or an evaluation), also in the
    /// TensorBoard event file when there is one.
    pub fn log(&mut self, entry: Value) -> anyhow::Result<()> {
        if let Some(tb) = &mut self.tensorboard {
            let step = entry["step"].as_u64().unwrap_or(0) as usize;
            tb.scalars(step, &entry_scalars(&entry))?;
        }
        self.progress.log_history.push(entry);
        Ok(())
    }

    /// Saves a checkpoint when `save_strategy` asks for one at the current step (call
    /// after everything the step logs, so a resumed run's history is the same).
    pub fn maybe_save(&mut self) -> anyhow::Result<()> {
        let done = self.progress.global_step;
        if self.info.save_steps.is_some_and(|s| done.is_multiple_of(s)) {
            self.sync_dropout();
            let tps = self.tokens_per_second();
            let out = &self.cfg.training.output_dir;
            self.info
                .save_checkpoint(out, &self.opt, &self.progress, tps)?;
        }
        Ok(())
    }

    /// One logging step as a line: step, metrics, learning rate, grad norm, tokens/s,
    /// elapsed and remaining time.
    fn log_line(&self, entry: &Value, done: usize) -> String {
        let mut parts = vec![format!("step {done}/{}", self.info.total_steps)];
        if let Some(m) = entry.as_object() {
            for (k, v) in m {
                if let (false, Some(x)) = (["epoch", "step"].contains(&k.as_str()), v.as_f64()) {
                    parts.push(format!("{k} {x:.4e}"));
                }
            }
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let run = (done - self.first).max(1) as f64;
        let left = elapsed / run * (self.info.total_steps - done) as f64;
        parts.push(format!("{:.1} tok/s", self.tokens_per_second()));
        parts.push(format!("elapsed {} left {}", clock(elapsed), clock(left)));
        parts.join(" | ")
    }

    /// A log entry stamped with the current epoch and step.
    pub fn entry(&self) -> Value {
        let done = self.progress.global_step;
        json!({
            "epoch": done as f64 / self.info.steps_per_epoch as f64,
            "step": done,
        })
    }

    /// Writes the final model and state into `output_dir`.
    pub fn finish(mut self) -> anyhow::Result<Finish> {
        self.pb.finish_and_clear();
        self.sync_dropout();
        let tps = self.tokens_per_second();
        self.info
            .save_final(&self.cfg.training.output_dir, &self.progress, tps)?;
        Ok(Finish::Done(self.progress))
    }
}

/// Seconds as `h:mm:ss`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

//! The `training` binary: `init` writes a tiny random checkpoint; `jsft` runs judge-augmented
//! SFT; `self-judge` trains by DPO on pairs the reference model judged.

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "training",
    version,
    about = "JSFT and self-judge training for self-judge checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `jsft` and `self-judge` share.
#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    config: std::path::PathBuf,
    /// Continue from the newest checkpoint-<step> folder in output_dir.
    #[arg(long)]
    resume: bool,
    /// Stop after this many optimizer steps (a checkpoint is saved; continue with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Train with the global batch of N data-parallel processes (the seed ran 8) through
    /// gradient accumulation on this one device.
    #[arg(long, conflicts_with = "accelerate_config")]
    num_processes: Option<usize>,
    /// Read N for --num-processes from an accelerate config file's `num_processes`.
    #[arg(long)]
    accelerate_config: Option<std::path::PathBuf>,
    /// Where to train: `cpu`, `cuda` or `cuda:N` (CUDA needs a binary built with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<training::trainer::RunOptions> {
        let num_processes = match &self.accelerate_config {
            Some(p) => Some(training::trainer::accelerate_processes(p)?),
            None => self.num_processes,
        };
        anyhow::ensure!(
            num_processes != Some(0),
            "--num-processes must be at least 1"
        );
        Ok(training::trainer::RunOptions {
            resume: self.resume,
            stop_after: self.stop_after,
            num_processes,
            device: self_judge_model::parse_device(&self.device)?,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Write a tiny randomly initialised HF checkpoint (tests, demos).
    Init(training::init::InitArgs),
    /// Judge-augmented supervised fine-tuning (SPEC §4): all weights, or LoRA with `peft_config`.
    Jsft(RunArgs),
    /// Self-training by on-policy judgment: DPO on pairs the reference model judged (SPEC §5).
    SelfJudge {
        #[command(flatten)]
        run: RunArgs,
        /// Write every sampled pair with the judge's verdict to this JSONL file.
        #[arg(long)]
        pairs_log: Option<std::path::PathBuf>,
    },
}

fn main() {
    self_judge_model::threads::one_cpu_pool();
    training::alloc::keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Init(a) => training::init::run(a),
        Command::Jsft(r) => r.options().and_then(|o| training::jsft::run(&r.config, &o)),
        Command::SelfJudge { run, pairs_log } => run
            .options()
            .and_then(|o| training::self_judge::run(&run.config, &o, pairs_log.as_deref())),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

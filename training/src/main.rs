//! The `training` binary: `init` writes a tiny random checkpoint; `jsft` runs judge-augmented
//! SFT; `self-judge` trains by DPO on pairs the reference model judged.

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Write a tiny randomly initialised HF checkpoint (tests, demos).
    Init(training::init::InitArgs),
    /// Judge-augmented supervised fine-tuning (SPEC §4): all weights, or LoRA with `peft_config`.
    Jsft {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Continue from the newest checkpoint-<step> folder in output_dir.
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimizer steps (a checkpoint is saved; continue with --resume).
        #[arg(long)]
        stop_after: Option<usize>,
    },
    /// Self-training by on-policy judgment: DPO on pairs the reference model judged (SPEC §5).
    SelfJudge {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Continue from the newest checkpoint-<step> folder in output_dir.
        #[arg(long)]
        resume: bool,
        /// Stop after this many optimizer steps (a checkpoint is saved; continue with --resume).
        #[arg(long)]
        stop_after: Option<usize>,
        /// Write every sampled pair with the judge's verdict to this JSONL file.
        #[arg(long)]
        pairs_log: Option<std::path::PathBuf>,
    },
}

fn main() {
    let result = match Cli::parse().command {
        Command::Init(a) => training::init::run(a),
        Command::Jsft {
            config,
            resume,
            stop_after,
        } => training::jsft::run(
            &config,
            &training::trainer::RunOptions { resume, stop_after },
        ),
        Command::SelfJudge {
            config,
            resume,
            stop_after,
            pairs_log,
        } => training::self_judge::run(
            &config,
            &training::trainer::RunOptions { resume, stop_after },
            pairs_log.as_deref(),
        ),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

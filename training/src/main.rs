//! The `training` binary: judge-augmented SFT (JSFT) and self-training by on-policy
//! self-judgment (DPO), writing checkpoints that `self-judge serve` loads.
//!
//! Neither trainer has landed yet; until then the binary only describes them and
//! refuses to run, so no script can mistake it for a working trainer.

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
    /// Judge-augmented supervised fine-tuning (SPEC §4). Not implemented yet.
    Jsft {
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Self-training by on-policy judgment, DPO on self-judged pairs (SPEC §5). Not implemented yet.
    SelfJudge {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

fn main() {
    let name = match Cli::parse().command {
        Command::Jsft { .. } => "jsft",
        Command::SelfJudge { .. } => "self-judge",
    };
    eprintln!("error: `training {name}` is not implemented yet in this build");
    std::process::exit(2);
}

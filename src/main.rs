//! The `self-judge` command line: generation, judging, tournaments and the server.

use clap::{Parser, Subcommand};
use self_judge::cli;

#[derive(Parser)]
#[command(
    name = "self-judge",
    version,
    about = "SELF-JUDGE: one LLM as policy and pairwise judge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt.
    Generate(cli::generate::GenerateArgs),
    /// Judge pairs from a JSONL file (one verdict per line).
    Judge(cli::judge::JudgeArgs),
    /// Run a knockout tournament per context from a JSONL file.
    Tournament(cli::judge::TournamentArgs),
    /// Serve /judge, /tournament and /generate over HTTP.
    Serve(self_judge::server::ServeArgs),
    /// Print the OpenAPI document.
    Openapi,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Generate(a) => cli::generate::run(a),
        Command::Judge(a) => cli::judge::run_judge(a),
        Command::Tournament(a) => cli::judge::run_tournament_cmd(a),
        Command::Serve(a) => self_judge::server::serve(a),
        Command::Openapi => {
            println!("{}", self_judge::server::openapi::spec_json());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! `self-judge judge` and `self-judge tournament`: offline judging of JSONL files.
//!
//! Input policy: the whole file is parsed and validated first. If any line is invalid,
//! every bad line is reported (with its number) and the command exits non-zero before
//! any model work and without writing output, so a run never leaves partial results.
//! Output is written to a temporary file and renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ModelArgs;
use crate::engine::scorer::CachedScorer;
use crate::judge::{run_tournament, Bracket, Judge, JudgeConfig, JudgeOptions, Pair, Verdict};
use crate::model::LoadedModel;

/// Options shared by `judge` and `tournament`.
#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// YAML config with `templates.judge` (seed format).
    #[arg(long)]
    pub config: PathBuf,
    /// JSONL input file.
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Comma-separated subset of principles.
    #[arg(long, value_delimiter = ',')]
    pub principles: Option<Vec<String>>,
    /// Overrides the config's max_length (prompt tokens, truncated from the left).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Use the config's token_id_a/token_id_b even if they differ from the tokenizer's.
    #[arg(long)]
    pub force_token_ids: bool,
    /// Token budget of one packed forward pass.
    #[arg(long, default_value_t = 8192)]
    pub max_batch_tokens: usize,
    /// MiB of keys/values kept for shared prompt prefixes.
    #[arg(long, default_value_t = 2048)]
    pub prefix_cache_mb: usize,
    /// Print the token ids and limits in use on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Loaded model and judge for a command.
pub struct Setup {
    pub model: LoadedModel,
    pub judge: Judge,
}

impl JudgeArgs {
    /// Loads config, model and judge; every start-up problem is reported here.
    pub fn setup(&self) -> anyhow::Result<Setup> {
        let cfg = JudgeConfig::from_file(&self.config)?;
        let model = self.model.load()?;
        let opts = JudgeOptions {
            max_length: self.max_length,
            force_token_ids: self.force_token_ids,
            principles: self.principles.clone(),
        };
        let judge = Judge::new(&model, &cfg, &opts)?;
        if self.verbose {
            eprintln!(
                "token ids: \" A\" = {}, \" B\" = {}; max_length {}; principles: {}",
                judge.token_ids.0,
                judge.token_ids.1,
                judge.prompts.max_length(),
                judge.template.names().join(", ")
            );
        }
        Ok(Setup { model, judge })
    }
}

impl JudgeArgs {
    /// The prompt executor: packed forwards with shared prefixes.
    pub fn scorer<'m>(&self, s: &'m Setup) -> CachedScorer<'m> {
        CachedScorer::new(
            &s.model.decoder,
            s.judge.token_ids,
            self.max_batch_tokens,
            self.prefix_cache_mb << 20,
        )
    }
}

/// Parses every non-empty line; returns all errors at once, each naming its line.
pub fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| check(&r).map(|_| r))
        {
            Ok(r) => rows.push(r),
            Err(e) => errors.push(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{} invalid line(s), nothing was judged:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    if rows.is_empty() {
        anyhow::bail!("{} has no input lines", path.display());
    }
    Ok(rows)
}

/// Writes one JSON object per line to `output` (atomically) or stdout.
pub fn write_jsonl<T: Serialize>(output: Option<&Path>, rows: &[T]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    match output {
        None => std::io::stdout().write_all(&buf)?,
        Some(p) => {
            let tmp = p.with_extension("partial");
            std::fs::write(&tmp, &buf)?;
            std::fs::rename(&tmp, p)?;
        }
    }
    Ok(())
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}}"
        ))
        .expect("static template"),
    );
    pb
}

/// Runs `self-judge judge`.
pub fn run_judge(args: JudgeArgs) -> anyhow::Result<()> {
    let pairs: Vec<Pair> = read_jsonl(&args.input, |_| Ok(()))?;
    let s = args.setup()?;
    let scorer = args.scorer(&s);
    let pb = progress(pairs.len(), "pairs");
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(pairs.len());
    // Groups of pairs per call keep the progress bar moving on long files.
    for chunk in pairs.chunks(16) {
        verdicts.extend(s.judge.judge(chunk, &scorer)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    write_jsonl(args.output.as_deref(), &verdicts)
}

/// One line of `self-judge tournament` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TournamentLine {
    pub context: String,
    pub responses: Vec<String>,
}

/// One line of `self-judge tournament` output.
#[derive(Debug, Serialize)]
pub struct TournamentOutput {
    pub winner: String,
    pub winner_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bracket: Option<Bracket>,
}

/// Arguments of `self-judge tournament`.
#[derive(Debug, Args)]
pub struct TournamentArgs {
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Seed of the bracket shuffles (same seed, same bracket).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Include each context's bracket in the output.
    #[arg(long)]
    pub bracket: bool,
}

/// Runs `self-judge tournament`: all contexts play their rounds together, every round
/// judged in one batched call.
pub fn run_tournament_cmd(args: TournamentArgs) -> anyhow::Result<()> {
    let lines: Vec<TournamentLine> = read_jsonl(&args.judge.input, |l: &TournamentLine| {
        if l.responses.is_empty() {
            Err("`responses` is empty".into())
        } else {
            Ok(())
        }
    })?;
    let s = args.judge.setup()?;
    let scorer = args.judge.scorer(&s);
    let contexts: Vec<String> = lines.iter().map(|l| l.context.clone()).collect();
    let responses: Vec<Vec<String>> = lines.iter().map(|l| l.responses.clone()).collect();
    let total: usize = responses.iter().map(|r| r.len() - 1).sum();
    let pb = progress(total, "matches");
    let results = run_tournament(&contexts, &responses, args.seed, |pairs| {
        let v = s.judge.judge(pairs, &scorer)?;
        pb.inc(pairs.len() as u64);
        Ok(v)
    })?;
    pb.finish_and_clear();
    let out: Vec<TournamentOutput> = results
        .into_iter()
        .zip(&responses)
        .map(|(r, resp)| TournamentOutput {
            winner: resp[r.winner_index].clone(),
            winner_index: r.winner_index,
            bracket: args.bracket.then_some(r.bracket),
        })
        .collect();
    write_jsonl(args.judge.output.as_deref(), &out)
}

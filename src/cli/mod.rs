//! Command-line entry points of the `self-judge` binary.

pub mod generate;
pub mod judge;

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::model::{LoadOptions, LoadedModel};

/// Options shared by every command that loads a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// HF checkpoint directory or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Where the model runs: cpu, cuda (GPU 0) or cuda:N (needs a build with the
    /// `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Activation dtype: f32, bf16 or f16 (default: f32 on the CPU, bf16 on a GPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// For GGUF files: keep matrices quantized (less memory). The default dequantizes
    /// them, because candle's CPU quantized matmul is both slower than its f32 GEMM for
    /// prefill and adds activation-quantization noise that flips close judgments.
    #[arg(long)]
    pub quantized: bool,
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors):
    /// `DIR` merges it into the model's weights at start (e.g. adapters/smollm2-judge);
    /// `NAME=DIR` (repeatable, `serve` only) keeps it unmerged next to the base, for
    /// requests that name it.
    #[arg(long = "adapter", value_name = "[NAME=]DIR")]
    pub adapters: Vec<String>,
}

/// An adapter served under a name, next to the base model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAdapterArg {
    pub name: String,
    pub dir: PathBuf,
}

impl ModelArgs {
    /// The adapter merged at load (a `--adapter DIR` without a name), and the named
    /// ones; a bad combination is refused naming the flag.
    pub fn split_adapters(&self) -> anyhow::Result<(Option<PathBuf>, Vec<NamedAdapterArg>)> {
        let mut merged = None;
        let mut named: Vec<NamedAdapterArg> = Vec::new();
        for a in &self.adapters {
            match parse_adapter(a) {
                (Some(name), dir) => {
                    if named.iter().any(|n| n.name == name) {
                        bail!("--adapter: the name `{name}` is given twice");
                    }
                    named.push(NamedAdapterArg { name, dir });
                }
                (None, dir) => {
                    if merged.is_some() {
                        bail!("--adapter: at most one adapter can be merged (DIR); name the others (NAME=DIR) to serve them side by side");
                    }
                    merged = Some(dir);
                }
            }
        }
        Ok((merged, named))
    }

    /// Loads the model these options describe, with the unnamed adapter merged. Named
    /// adapters are refused: only `serve` keeps them (see [`ModelArgs::split_adapters`]).
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let (merged, named) = self.split_adapters()?;
        if let Some(n) = named.first() {
            bail!(
                "--adapter {}={}: named adapters are served side by side by `serve`; give the folder alone to merge it here",
                n.name,
                n.dir.display()
            );
        }
        self.load_base(merged.as_deref())
    }

    /// Loads the model with `merged` merged into its weights.
    pub fn load_base(&self, merged: Option<&std::path::Path>) -> anyhow::Result<LoadedModel> {
        let opts = LoadOptions::from_flags(&self.device, self.dtype.as_deref(), self.quantized)?;
        Ok(LoadedModel::load_adapted(&self.model, &opts, merged)?)
    }
}

/// `NAME=DIR` or `DIR`: a name is what precedes the first `=` when it is a plain name
/// (letters, digits, `-`, `_`, `.`, `:`), so a folder whose path holds `=` still works.
fn parse_adapter(arg: &str) -> (Option<String>, PathBuf) {
    if let Some((name, dir)) = arg.split_once('=') {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if plain && !dir.is_empty() {
            return (Some(name.to_string()), PathBuf::from(dir));
        }
    }
    (None, PathBuf::from(arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(adapters: &[&str]) -> ModelArgs {
        ModelArgs {
            model: "m.gguf".into(),
            device: "cpu".into(),
            dtype: None,
            quantized: false,
            adapters: adapters.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn adapters_are_merged_or_named() {
        let (merged, named) = args(&["adapters/judge", "jsft=out/a", "b.2=/x/y=z"])
            .split_adapters()
            .unwrap();
        assert_eq!(merged, Some(PathBuf::from("adapters/judge")));
        assert_eq!(
            named,
            vec![
                NamedAdapterArg {
                    name: "jsft".into(),
                    dir: "out/a".into()
                },
                NamedAdapterArg {
                    name: "b.2".into(),
                    dir: "/x/y=z".into()
                },
            ]
        );
        // A path with `=` but no plain name before it is a folder.
        assert_eq!(parse_adapter("./a=b"), (None, PathBuf::from("./a=b")));
        assert_eq!(parse_adapter("=b"), (None, PathBuf::from("=b")));
    }

    #[test]
    fn bad_adapter_flags_are_refused() {
        let e = args(&["a", "b"]).split_adapters().unwrap_err().to_string();
        assert!(e.contains("at most one"), "{e}");
        let e = args(&["x=a", "x=b"])
            .split_adapters()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` is given twice"), "{e}");
        let e = args(&["x=a"]).load().unwrap_err().to_string();
        assert!(e.contains("served side by side by `serve`"), "{e}");
    }
}

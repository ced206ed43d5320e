//! Command-line entry points of the `self-judge` binary.

pub mod generate;
pub mod judge;

use std::path::PathBuf;

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
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)
    /// merged into the model's weights at start, e.g. adapters/smollm2-judge.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// Loads the model these options describe.
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let opts = LoadOptions::from_flags(&self.device, self.dtype.as_deref(), self.quantized)?;
        Ok(LoadedModel::load_adapted(
            &self.model,
            &opts,
            self.adapter.as_deref(),
        )?)
    }
}

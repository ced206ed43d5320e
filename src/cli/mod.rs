//! Command-line entry points of the `self-judge` binary.

pub mod generate;
pub mod judge;

use std::path::PathBuf;

use clap::Args;

use crate::model::loader::parse_dtype;
use crate::model::{LoadOptions, LoadedModel};

/// Options shared by every command that loads a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// HF checkpoint directory or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Activation dtype: f32 (CPU default), bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// For GGUF files: keep matrices quantized (less memory). The default dequantizes
    /// them, because candle's CPU quantized matmul is both slower than its f32 GEMM for
    /// prefill and adds activation-quantization noise that flips close judgments.
    #[arg(long)]
    pub quantized: bool,
}

impl ModelArgs {
    /// Loads the model these options describe.
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let opts = LoadOptions {
            dtype: parse_dtype(&self.dtype)?,
            quantized: self.quantized,
            ..LoadOptions::default()
        };
        Ok(LoadedModel::load(&self.model, &opts)?)
    }
}

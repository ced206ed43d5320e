//! Command-line entry points of the `self-judge` binary.

pub mod generate;

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
    /// For GGUF files: dequantize the weights instead of keeping them quantized.
    #[arg(long)]
    pub dequantize: bool,
}

impl ModelArgs {
    /// Loads the model these options describe.
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let opts = LoadOptions {
            dtype: parse_dtype(&self.dtype)?,
            quantized: !self.dequantize,
            ..LoadOptions::default()
        };
        Ok(LoadedModel::load(&self.model, &opts)?)
    }
}

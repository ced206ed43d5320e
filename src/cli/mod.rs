//! Command-line entry points of the `self-judge` binary.

pub mod generate;
pub mod judge;

use std::path::PathBuf;

use clap::Args;

use crate::model::loader::parse_dtype;
use crate::model::{default_dtype, parse_device, LoadOptions, LoadedModel};

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
}

impl ModelArgs {
    /// Loads the model these options describe.
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let device = parse_device(&self.device)?;
        let dtype = match &self.dtype {
            Some(d) => parse_dtype(d)?,
            None => default_dtype(&device),
        };
        let opts = LoadOptions {
            dtype,
            quantized: self.quantized,
            device,
        };
        Ok(LoadedModel::load(&self.model, &opts)?)
    }
}

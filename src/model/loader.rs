//! Loads a checkpoint (HF directory or GGUF file) into a decoder, tokenizer and chat
//! template.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device};

use super::adapter::{LoraAdapter, MergedSource};
use super::config::ModelConfig;
use super::decoder::Decoder;
use super::gguf::GgufFile;
use super::weights::{SafetensorsSource, WeightSource};
use super::{ModelError, Result};
use self_judge_tokenizer::{gguf::from_gguf, ChatTemplate, TextTokenizer};

/// How a checkpoint was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    GgufQuantized,
    GgufDequantized,
}

/// Load-time choices.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Activation and dense weight dtype.
    pub dtype: DType,
    /// For GGUF: keep matrices quantized (true) or dequantize them to `dtype` (default).
    pub quantized: bool,
    /// Where weights and activations live (see [`super::parse_device`]).
    pub device: Device,
    /// Pack f32 CPU projection weights once for the serving kernel
    /// ([`Decoder::pack_weights`]; default true). Other devices and dtypes ignore it.
    pub packed: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            quantized: false,
            device: Device::Cpu,
            packed: true,
        }
    }
}

impl LoadOptions {
    /// Options from command-line values: `device` as [`super::parse_device`] reads it,
    /// `dtype` by [`parse_dtype`] or, when absent, the device's default
    /// ([`super::default_dtype`]).
    pub fn from_flags(device: &str, dtype: Option<&str>, quantized: bool) -> Result<Self> {
        let device = super::parse_device(device)?;
        let dtype = match dtype {
            Some(d) => parse_dtype(d)?,
            None => super::default_dtype(&device),
        };
        Ok(Self {
            dtype,
            quantized,
            device,
            packed: true,
        })
    }
}

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => DType::from_str(other)
            .ok()
            .filter(|d| matches!(d, DType::F32 | DType::BF16 | DType::F16))
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unsupported dtype `{other}` (use f32, bf16 or f16)"
                ))
            }),
    }
}

/// A model ready to run: decoder, tokenizer and (optional) chat template.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub format: WeightFormat,
    /// Where the checkpoint came from.
    pub path: PathBuf,
    /// The PEFT LoRA adapter merged into the weights at load, if any.
    pub adapter: Option<PathBuf>,
}

impl LoadedModel {
    /// Loads a HF directory or a `.gguf` file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_adapted(path, opts, None)
    }

    /// Loads a checkpoint and merges a PEFT LoRA adapter folder into its weights
    /// (`W + scale · B A`), so serving an adapter costs nothing per token.
    pub fn load_adapted(path: &Path, opts: &LoadOptions, adapter: Option<&Path>) -> Result<Self> {
        let adapter = adapter.map(LoraAdapter::read).transpose()?;
        if adapter.is_some() && opts.quantized {
            return Err(ModelError::Config(
                "an adapter is merged into dense weights: drop --quantized to use --adapter".into(),
            ));
        }
        let mut model = if path.is_dir() {
            Self::load_hf(path, opts, adapter.as_ref())
        } else if path.is_file() {
            Self::load_gguf(path, opts, adapter.as_ref())
        } else {
            Err(ModelError::Weights(format!(
                "model path {} does not exist",
                path.display()
            )))
        }?;
        model.adapter = adapter.map(|a| a.dir);
        Ok(model)
    }

    /// Builds the decoder from `src`, through the adapter when there is one.
    fn decoder(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        adapter: Option<&LoraAdapter>,
        opts: &LoadOptions,
    ) -> Result<Decoder> {
        let mut d = match adapter {
            None => Decoder::load(cfg, src, opts.dtype, &opts.device)?,
            Some(a) => {
                let mut merged = MergedSource::new(src, a);
                let d = Decoder::load(cfg, &mut merged, opts.dtype, &opts.device)?;
                merged.finish()?;
                d
            }
        };
        if opts.packed {
            d.pack_weights()?;
        }
        Ok(d)
    }

    fn load_hf(dir: &Path, opts: &LoadOptions, adapter: Option<&LoraAdapter>) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io {
            path: cfg_path.display().to_string(),
            source: e,
        })?;
        let cfg = ModelConfig::from_hf_json(&text)?;
        let mut src = SafetensorsSource::open(dir, opts.dtype, &opts.device)?;
        let decoder = Self::decoder(&cfg, &mut src, adapter, opts)?;
        let (tokenizer, template) = TextTokenizer::from_hf_dir(dir, &cfg.eos_token_ids)?;
        Self::finish(decoder, tokenizer, template, WeightFormat::Safetensors, dir)
    }

    fn load_gguf(path: &Path, opts: &LoadOptions, adapter: Option<&LoraAdapter>) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let cfg = file.config()?;
        let (tokenizer, template) = from_gguf(file.metadata())?;
        let mut src = file.source(&cfg, opts.quantized, opts.dtype, &opts.device);
        let decoder = Self::decoder(&cfg, &mut src, adapter, opts)?;
        let format = if opts.quantized {
            WeightFormat::GgufQuantized
        } else {
            WeightFormat::GgufDequantized
        };
        Self::finish(decoder, tokenizer, template, format, path)
    }

    fn finish(
        decoder: Decoder,
        tokenizer: TextTokenizer,
        template: Option<String>,
        format: WeightFormat,
        path: &Path,
    ) -> Result<Self> {
        if tokenizer.vocab_size() > decoder.cfg.vocab_size {
            return Err(ModelError::Tokenizer(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                decoder.cfg.vocab_size
            )));
        }
        let chat_template = template.as_deref().map(ChatTemplate::new).transpose()?;
        // On CUDA the weight copies are queued on the loading thread's stream; the engine
        // runs on another thread (another per-thread stream), so they must be complete
        // before it starts.
        decoder.device().synchronize()?;
        Ok(Self {
            decoder,
            tokenizer,
            chat_template,
            format,
            path: path.to_path_buf(),
            adapter: None,
        })
    }

    /// This model with a PEFT LoRA adapter folder attached unmerged: the weights are
    /// shared with `self` (only the adapter's factors are new), so one base serves
    /// several adapters. Judging and generation equal those of the merged checkpoint up
    /// to rounding.
    pub fn with_adapter(&self, dir: &Path) -> Result<Self> {
        let adapter = LoraAdapter::read(dir)?;
        let decoder = adapter.attach(&self.decoder)?;
        Ok(Self {
            decoder,
            adapter: Some(adapter.dir),
            ..self.clone()
        })
    }

    /// Replaces the checkpoint's chat template (a config's template wins, SPEC §2).
    pub fn set_chat_template(&mut self, source: &str) -> Result<()> {
        self.chat_template = Some(ChatTemplate::new(source)?);
        Ok(())
    }

    /// The chat template, or an error naming the checkpoint when it has none.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.chat_template.as_ref().ok_or_else(|| {
            ModelError::Config(format!(
                "{} has no chat template; give one in the config (templates.chat)",
                self.path.display()
            ))
        })
    }

    /// The parts judging and generation read.
    pub fn view(&self) -> ModelView<'_> {
        self.into()
    }
}

/// What judging and generation need of a model, borrowed: a loaded checkpoint gives
/// one ([`LoadedModel::view`]), and training builds one from the decoder it trains.
#[derive(Debug, Clone, Copy)]
pub struct ModelView<'a> {
    pub decoder: &'a Decoder,
    pub tokenizer: &'a TextTokenizer,
    pub chat_template: Option<&'a ChatTemplate>,
}

impl<'a> From<&'a LoadedModel> for ModelView<'a> {
    fn from(m: &'a LoadedModel) -> Self {
        Self {
            decoder: &m.decoder,
            tokenizer: &m.tokenizer,
            chat_template: m.chat_template.as_ref(),
        }
    }
}

impl ModelView<'_> {
    /// The chat template, or an error when the model has none.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.chat_template.ok_or_else(|| {
            ModelError::Config(
                "the model has no chat template; give one in the config (templates.chat)".into(),
            )
        })
    }
}

//! The inference decoder made trainable: every weight becomes a candle `Var`, and the
//! decoder runs in its differentiable ops mode (candle's fused RMSNorm, rotary and
//! softmax have no backward).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use self_judge::model::gguf::GgufFile;
use self_judge::model::linear::Linear;
use self_judge::model::weights::{SafetensorsSource, WeightSource};
use self_judge::model::{Decoder, ModelConfig, OpsMode};
use self_judge::tokenizer::TextTokenizer;

/// Wraps another source and turns each tensor into a `Var`, remembering it by name.
struct VarSource<'a> {
    inner: &'a mut dyn WeightSource,
    vars: Vec<(String, Var)>,
}

impl WeightSource for VarSource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> self_judge::model::Result<Tensor> {
        let t = self.inner.tensor(name, shape)?.to_dtype(DType::F32)?;
        let v = Var::from_tensor(&t)?;
        let out = v.as_tensor().clone();
        self.vars.push((name.to_string(), v));
        Ok(out)
    }

    fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> self_judge::model::Result<Linear> {
        let w = self.tensor(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::dense(w, b))
    }
}

/// A decoder whose weights are trainable variables.
pub struct TrainModel {
    pub decoder: Decoder,
    /// Every weight by HF name, in load order (tied embeddings appear once).
    pub vars: Vec<(String, Var)>,
    pub tokenizer: TextTokenizer,
    /// The checkpoint's chat template, if any.
    pub chat_template: Option<String>,
}

impl TrainModel {
    /// Loads a HF directory (f32/bf16/f16 weights, kept in f32) or a GGUF file
    /// (dequantized) as trainable f32 weights on the CPU.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let dev = Device::Cpu;
        if path.is_dir() {
            let text = std::fs::read_to_string(path.join("config.json"))
                .with_context(|| format!("reading {}/config.json", path.display()))?;
            let cfg = ModelConfig::from_hf_json(&text)?;
            let mut st = SafetensorsSource::open(path, DType::F32, &dev)?;
            let (tokenizer, chat_template) = TextTokenizer::from_hf_dir(path, &cfg.eos_token_ids)?;
            Self::build(&cfg, &mut st, tokenizer, chat_template)
        } else {
            let file = GgufFile::open(path)?;
            let cfg = file.config()?;
            let (tokenizer, chat_template) = self_judge::tokenizer::gguf::from_gguf(&file)?;
            let mut src = file.source(&cfg, false, DType::F32, &dev);
            Self::build(&cfg, &mut src, tokenizer, chat_template)
        }
    }

    /// Builds the trainable decoder from any weight source.
    pub fn build(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        tokenizer: TextTokenizer,
        chat_template: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut vs = VarSource {
            inner: src,
            vars: Vec::new(),
        };
        let mut decoder = Decoder::load(cfg, &mut vs, DType::F32, &Device::Cpu)?;
        decoder.set_mode(OpsMode::Differentiable);
        Ok(Self {
            decoder,
            vars: vs.vars,
            tokenizer,
            chat_template,
        })
    }

    /// Current weights by name (detached copies sharing storage).
    pub fn named_weights(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

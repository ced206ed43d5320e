//! The inference decoder made trainable: every weight (full fine-tuning) or adapter
//! (LoRA) becomes a candle `Var`, and training passes run the decoder's ops with their
//! own backward (`self_judge_model::autograd`).

use std::collections::HashMap;
use std::path::Path;

use std::sync::Arc;

use anyhow::Context;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use self_judge_model::adapter::{LoraAdapter, MergedSource};
use self_judge_model::checkpoint::GradientCheckpointing;
use self_judge_model::gguf::GgufFile;
use self_judge_model::linear::LinearWeight;
use self_judge_model::weights::{SafetensorsSource, WeightSource};
use self_judge_model::{Decoder, ModelConfig};
use self_judge_tokenizer::TextTokenizer;

use crate::lora::{Adapters, LoraSpec};

/// Wraps another source and remembers each tensor by name, as a `Var` when the base
/// weights are trained (full fine-tuning) or as a frozen tensor under LoRA.
struct VarSource<'a> {
    inner: &'a mut dyn WeightSource,
    trainable: bool,
    weights: Vec<(String, Tensor)>,
    vars: Vec<(String, Var)>,
}

impl WeightSource for VarSource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> self_judge_model::Result<Tensor> {
        let t = self.inner.tensor(name, shape)?.to_dtype(DType::F32)?;
        let out = if self.trainable {
            let v = Var::from_tensor(&t)?;
            self.vars.push((name.to_string(), v.clone()));
            v.as_tensor().clone()
        } else {
            t
        };
        self.weights.push((name.to_string(), out.clone()));
        Ok(out)
    }
}

/// A decoder whose weights (full fine-tuning) or LoRA adapters are trainable variables.
pub struct TrainModel {
    pub decoder: Decoder,
    /// The trainable variables: every weight by HF name in load order (tied embeddings
    /// appear once), or the adapters' A/B matrices by PEFT key under LoRA.
    pub vars: Vec<(String, Var)>,
    /// Every base weight by HF name (shares storage with `vars` under full fine-tuning).
    pub base: Vec<(String, Tensor)>,
    /// The adapters when training LoRA.
    pub lora: Option<Adapters>,
    pub tokenizer: TextTokenizer,
    /// The checkpoint's chat template, if any.
    pub chat_template: Option<String>,
    /// The weight-gradient store of gradient checkpointing, when it is on.
    checkpointing: Option<Arc<GradientCheckpointing>>,
}

impl TrainModel {
    /// Loads a HF directory (f32/bf16/f16 weights, kept in f32) or a GGUF file
    /// (dequantized) as trainable f32 weights on the CPU.
    pub fn load(path: &Path, lora: Option<(&LoraSpec, u64)>) -> anyhow::Result<Self> {
        Self::load_with(path, lora, None, &Device::Cpu)
    }

    /// [`TrainModel::load`] on `device`, with a PEFT LoRA adapter merged into the base
    /// weights first (`model.peft_model_name_or_path`), as the server's `--adapter`
    /// merges it.
    pub fn load_with(
        path: &Path,
        lora: Option<(&LoraSpec, u64)>,
        adapter: Option<&LoraAdapter>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let dev = device.clone();
        if path.is_dir() {
            let text = std::fs::read_to_string(path.join("config.json"))
                .with_context(|| format!("reading {}/config.json", path.display()))?;
            let cfg = ModelConfig::from_hf_json(&text)?;
            let mut st = SafetensorsSource::open(path, DType::F32, &dev)?;
            let (tokenizer, chat_template) = TextTokenizer::from_hf_dir(path, &cfg.eos_token_ids)?;
            Self::build_with(
                &cfg,
                &mut st,
                tokenizer,
                chat_template,
                (lora, adapter),
                &dev,
            )
        } else {
            let file = GgufFile::open(path)?;
            let cfg = file.config()?;
            let (tokenizer, chat_template) =
                self_judge_tokenizer::gguf::from_gguf(file.metadata())?;
            let mut src = file.source(&cfg, false, DType::F32, &dev);
            Self::build_with(
                &cfg,
                &mut src,
                tokenizer,
                chat_template,
                (lora, adapter),
                &dev,
            )
        }
    }

    /// Builds the trainable decoder from any weight source; with `lora` = (spec, seed)
    /// the base weights are frozen and fresh adapters are attached.
    pub fn build(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        tokenizer: TextTokenizer,
        chat_template: Option<String>,
        lora: Option<(&LoraSpec, u64)>,
    ) -> anyhow::Result<Self> {
        Self::build_with(
            cfg,
            src,
            tokenizer,
            chat_template,
            (lora, None),
            &Device::Cpu,
        )
    }

    fn build_with(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        tokenizer: TextTokenizer,
        chat_template: Option<String>,
        (lora, adapter): (Option<(&LoraSpec, u64)>, Option<&LoraAdapter>),
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut merged;
        let inner: &mut dyn WeightSource = match adapter {
            Some(a) => {
                merged = Some(MergedSource::new(src, a));
                merged.as_mut().expect("just set")
            }
            None => {
                merged = None;
                src
            }
        };
        let mut vs = VarSource {
            inner,
            trainable: lora.is_none(),
            weights: Vec::new(),
            vars: Vec::new(),
        };
        let mut decoder = Decoder::load(cfg, &mut vs, DType::F32, device)?;
        let (vars, base) = (vs.vars, vs.weights);
        if let Some(m) = merged {
            m.finish()?;
        }
        let (vars, lora) = match lora {
            None => (vars, None),
            Some((spec, seed)) => {
                let adapters = Adapters::attach(&mut decoder, spec.clone(), seed)?;
                (adapters.vars.clone(), Some(adapters))
            }
        };
        Ok(Self {
            decoder,
            vars,
            base,
            lora,
            tokenizer,
            chat_template,
            checkpointing: None,
        })
    }

    /// Turns gradient checkpointing (`gradient_checkpointing: true`) on or off: training
    /// passes keep each layer's input only and recompute the layer in the backward.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on.then(GradientCheckpointing::new);
        self.decoder
            .set_gradient_checkpointing(self.checkpointing.clone());
    }

    /// HF's `bf16: true`: every projection computes in bf16 (inputs, weights and
    /// adapters cast to it, outputs back to f32) while norms, rotary, attention and the
    /// loss stay f32; the trained variables stay f32 (the master weights, and so the
    /// AdamW moments), their gradients arriving through the casts. Under LoRA the frozen
    /// projection weights are then kept in bf16 only (half their memory). Call once,
    /// after loading.
    pub fn use_bf16_compute(&mut self) -> anyhow::Result<()> {
        let frozen_bf16 = self.lora.is_some();
        let mut converted = HashMap::new();
        for (i, layer) in self.decoder.layers.iter_mut().enumerate() {
            for (path, p) in layer.projections_named_mut() {
                if let (true, LinearWeight::Dense(w)) = (frozen_bf16, &p.weight) {
                    if !w.track_op() {
                        let w = w.to_dtype(DType::BF16)?;
                        converted.insert(format!("model.layers.{i}.{path}.weight"), w.clone());
                        p.weight = LinearWeight::Dense(w);
                    }
                }
            }
        }
        for (name, t) in &mut self.base {
            if let Some(w) = converted.remove(name) {
                *t = w;
            }
        }
        anyhow::ensure!(
            converted.is_empty(),
            "projection weights missing from the base list: {:?}",
            converted.keys().collect::<Vec<_>>()
        );
        self.decoder.set_compute_dtype(Some(DType::BF16));
        Ok(())
    }

    /// `loss.backward()` plus the weight gradients that checkpointed layers computed in
    /// their recomputation: the gradients of every trainable variable. Every training
    /// backward goes through here.
    pub fn backward(&self, loss: &Tensor) -> anyhow::Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Some(c) = &self.checkpointing {
            c.merge_into(&mut grads)?;
        }
        Ok(grads)
    }

    /// The weights a plain HF checkpoint of the current model holds: the trained weights,
    /// or under LoRA the base with the adapters merged in (detached, f32).
    pub fn named_weights(&self) -> anyhow::Result<HashMap<String, Tensor>> {
        let base: HashMap<String, Tensor> = self
            .base
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.detach().to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        match &self.lora {
            None => Ok(base),
            Some(a) => a.merge(&base),
        }
    }

    /// The base model under LoRA (the decoder without its adapters, weights shared).
    pub fn without_adapters(&self) -> Decoder {
        self.decoder.without_adapters()
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
}

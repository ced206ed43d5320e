//! LoRA on the inference decoder's projections (PEFT semantics): `W x + (alpha / r) B A x`,
//! `A` Kaiming-uniform (PEFT's `a = sqrt(5)`, i.e. bound `1/sqrt(in)`), `B` zero, base
//! weights frozen. Saved in PEFT's format (`adapter_config.json`,
//! `adapter_model.safetensors` keyed `base_model.model.<module>.lora_A.weight`) and merged
//! into a plain HF checkpoint for the server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use self_judge_model::decoder::Layer;
use self_judge_model::linear::{Linear, Lora, LoraDropout};
use self_judge_model::Decoder;

/// Projections LoRA can target, with the HF module path inside a layer.
const MODULES: &[(&str, &str)] = &[
    ("q_proj", "self_attn.q_proj"),
    ("k_proj", "self_attn.k_proj"),
    ("v_proj", "self_attn.v_proj"),
    ("o_proj", "self_attn.o_proj"),
    ("gate_proj", "mlp.gate_proj"),
    ("up_proj", "mlp.up_proj"),
    ("down_proj", "mlp.down_proj"),
];

/// `peft_config`: rank, alpha, dropout and target modules.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<String>,
}

impl LoraSpec {
    /// PEFT's Llama default targets.
    pub fn default_targets() -> Vec<String> {
        vec!["q_proj".into(), "v_proj".into()]
    }

    /// Checks ranks and module names; `all-linear` expands to every projection.
    pub fn validate(mut self) -> anyhow::Result<Self> {
        anyhow::ensure!(self.r > 0, "`peft_config.r` must be > 0");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "`peft_config.lora_dropout` must be in [0, 1)"
        );
        if self.target_modules.iter().any(|m| m == "all-linear") {
            self.target_modules = MODULES.iter().map(|(m, _)| m.to_string()).collect();
        }
        for m in &self.target_modules {
            anyhow::ensure!(
                MODULES.iter().any(|(n, _)| n == m),
                "`peft_config.target_modules`: unknown module `{m}` (known: {})",
                MODULES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        anyhow::ensure!(
            !self.target_modules.is_empty(),
            "`peft_config.target_modules` is empty"
        );
        Ok(self)
    }

    /// `lora_alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// The adapters attached to one decoder.
pub struct Adapters {
    pub spec: LoraSpec,
    /// Trainable `A`/`B` matrices by PEFT key, in a fixed order.
    pub vars: Vec<(String, Var)>,
    counter: Arc<AtomicU64>,
}

fn slot<'a>(layer: &'a mut Layer, module: &str) -> &'a mut Linear {
    match module {
        "q_proj" => &mut layer.q_proj,
        "k_proj" => &mut layer.k_proj,
        "v_proj" => &mut layer.v_proj,
        "o_proj" => &mut layer.o_proj,
        "gate_proj" => &mut layer.gate_proj,
        "up_proj" => &mut layer.up_proj,
        _ => &mut layer.down_proj,
    }
}

fn dims(linear: &Linear) -> anyhow::Result<(usize, usize)> {
    match &linear.weight {
        self_judge_model::linear::LinearWeight::Dense(w) => Ok(w.dims2()?),
        _ => anyhow::bail!("LoRA needs dense base weights"),
    }
}

/// HF module path of `module` in layer `i`.
pub fn module_path(i: usize, module: &str) -> String {
    let (_, path) = MODULES
        .iter()
        .find(|(n, _)| *n == module)
        .expect("validated module");
    format!("model.layers.{i}.{path}")
}

impl Adapters {
    /// Attaches fresh adapters (A random from `seed`, B zero) to every target module.
    pub fn attach(decoder: &mut Decoder, spec: LoraSpec, seed: u64) -> anyhow::Result<Self> {
        let counter = Arc::new(AtomicU64::new(0));
        let dev = decoder.device().clone();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4C6F_5241);
        let mut vars = Vec::new();
        for (i, layer) in decoder.layers.iter_mut().enumerate() {
            for module in &spec.target_modules {
                let linear = slot(layer, module);
                let (out, inp) = dims(linear)?;
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..spec.r * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (spec.r, inp), &dev)?)?;
                let b = Var::from_tensor(&Tensor::zeros((out, spec.r), DType::F32, &dev)?)?;
                let dropout = (spec.dropout > 0.0).then(|| LoraDropout {
                    p: spec.dropout as f32,
                    seed,
                    counter: counter.clone(),
                });
                linear.lora = Some(Lora {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                    scale: spec.scale(),
                    dropout,
                });
                let key = format!("base_model.model.{}", module_path(i, module));
                vars.push((format!("{key}.lora_A.weight"), a));
                vars.push((format!("{key}.lora_B.weight"), b));
            }
        }
        Ok(Self {
            spec,
            vars,
            counter,
        })
    }

    /// Dropout masks drawn so far (saved for resume).
    pub fn dropout_counter(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Restores the dropout mask counter.
    pub fn set_dropout_counter(&self, k: u64) {
        self.counter.store(k, Ordering::Relaxed);
    }

    /// The base weights with `scale · B A` added to every targeted projection.
    pub fn merge(&self, base: &HashMap<String, Tensor>) -> anyhow::Result<HashMap<String, Tensor>> {
        let mut out = base.clone();
        for pair in self.vars.chunks(2) {
            let key = pair[0].0.trim_end_matches(".lora_A.weight");
            let module = key.trim_start_matches("base_model.model.");
            let name = format!("{module}.weight");
            let w = base
                .get(&name)
                .with_context(|| format!("base weight {name} missing"))?;
            let delta = (pair[1].1.as_tensor().matmul(pair[0].1.as_tensor())? * self.spec.scale())?;
            out.insert(name, (w + delta.to_dtype(w.dtype())?)?);
        }
        Ok(out)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path, base_model: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.spec.r,
            "lora_alpha": self.spec.alpha,
            "lora_dropout": self.spec.dropout,
            "target_modules": self.spec.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false,
            "layers_to_transform": null,
        });
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect();
        crate::checkpoint::save_tensors(&map, &dir.join("adapter_model.safetensors"))?;
        Ok(())
    }

    /// Loads adapter weights saved by [`Adapters::save`] (same targets and rank).
    pub fn load_weights(&self, dir: &Path) -> anyhow::Result<()> {
        let file = dir.join("adapter_model.safetensors");
        let saved = candle_core::safetensors::load(&file, &Device::Cpu)
            .with_context(|| format!("reading {}", file.display()))?;
        for (name, var) in &self.vars {
            let t = saved
                .get(name)
                .with_context(|| format!("{}: missing {name}", file.display()))?;
            anyhow::ensure!(
                t.dims() == var.dims(),
                "{}: {name} has shape {:?}, expected {:?}",
                file.display(),
                t.dims(),
                var.dims()
            );
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

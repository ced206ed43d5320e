//! PEFT LoRA adapters (`--adapter DIR`, `--adapter NAME=DIR`): the folder PEFT's
//! `save_pretrained` writes (`adapter_config.json`, `adapter_model.safetensors` keyed
//! `base_model.model.<module>.lora_A.weight`), so an adapter made by our `training`
//! binary or by PEFT itself serves on any base checkpoint format. An adapter is either
//! merged into the base weights at load ([`MergedSource`]: nothing to pay per token) or
//! attached unmerged to a copy of the decoder that shares the base weights
//! ([`LoraAdapter::attach`]: several adapters next to one base).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::decoder::Decoder;
use super::linear::{Linear, Lora};
use super::weights::WeightSource;
use super::{ModelError, Result};

/// The two factors of one adapted projection (f32, on the CPU as read).
#[derive(Debug, Clone)]
pub struct LoraFactors {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
}

/// One adapter: per adapted weight its factors, and the scale of `B A`.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Factors by base weight name (`model.layers.0.self_attn.q_proj.weight`).
    pub modules: HashMap<String, LoraFactors>,
    /// `lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`).
    pub scale: f64,
    pub dir: PathBuf,
}

fn bad(dir: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Weights(format!("adapter {}: {msg}", dir.display()))
}

impl LoraAdapter {
    /// Reads a PEFT LoRA folder; every problem names the file and what is wrong.
    pub fn read(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io {
            path: cfg_path.display().to_string(),
            source: e,
        })?;
        let cfg: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(dir, format!("adapter_config.json is not JSON: {e}")))?;
        if cfg["peft_type"] != "LORA" {
            return Err(bad(
                dir,
                format!(
                    "only LoRA adapters can be served (peft_type {})",
                    cfg["peft_type"]
                ),
            ));
        }
        let r = cfg["r"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .ok_or_else(|| bad(dir, "adapter_config.json: `r` must be a positive number"))?;
        let alpha = cfg["lora_alpha"].as_f64().unwrap_or(r);
        let scale = if cfg["use_rslora"] == true {
            alpha / r.sqrt()
        } else {
            alpha / r
        };
        let file = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| bad(dir, format!("reading adapter_model.safetensors: {e}")))?;
        let mut modules = HashMap::new();
        for (k, a) in &tensors {
            let Some(module) = k.strip_suffix(".lora_A.weight") else {
                continue;
            };
            let b = tensors
                .get(&format!("{module}.lora_B.weight"))
                .ok_or_else(|| bad(dir, format!("{module} has lora_A but no lora_B")))?;
            let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            let (ra, rb) = (a.dims2().map(|d| d.0), b.dims2().map(|d| d.1));
            if ra.is_err() || ra.ok() != rb.ok() {
                return Err(bad(
                    dir,
                    format!(
                        "{module}: lora_A {:?} and lora_B {:?} are not [r, in] and [out, r]",
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let name = format!("{}.weight", module.trim_start_matches("base_model.model."));
            modules.insert(name, LoraFactors { a, b });
        }
        if modules.is_empty() {
            return Err(bad(dir, "adapter_model.safetensors holds no LoRA weights"));
        }
        Ok(Self {
            modules,
            scale,
            dir: dir.to_path_buf(),
        })
    }

    /// `scale · B A` for the weight `name` (f32), if the adapter touches it.
    pub fn delta(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(f) = self.modules.get(name) else {
            return Ok(None);
        };
        let d = (f.b.matmul(&f.a)? * self.scale)
            .map_err(|e| bad(&self.dir, format!("{name}: lora_B · lora_A: {e}")))?;
        Ok(Some(d))
    }

    /// A copy of `decoder` (its weights shared, not copied) with this adapter attached
    /// unmerged: each adapted projection computes `x Wᵀ + scale · (x Aᵀ) Bᵀ`. Every
    /// adapted weight must exist with matching shapes, as when merging.
    pub fn attach(&self, decoder: &Decoder) -> Result<Decoder> {
        let mut d = decoder.without_adapters();
        let (dtype, device) = (d.dtype(), d.device().clone());
        let mut used = BTreeSet::new();
        for (i, layer) in d.layers.iter_mut().enumerate() {
            for (path, linear) in layer.projections_named_mut() {
                let name = format!("model.layers.{i}.{path}.weight");
                let Some(f) = self.modules.get(&name) else {
                    continue;
                };
                let (out, inp) = linear.weight.dims();
                let (r, a_in) = f.a.dims2()?;
                let (b_out, _) = f.b.dims2()?;
                if (b_out, a_in) != (out, inp) {
                    return Err(bad(
                        &self.dir,
                        format!(
                            "`{name}` is [{out}, {inp}] but the adapter's B A is [{b_out}, {a_in}] (r {r})"
                        ),
                    ));
                }
                linear.lora = Some(Lora {
                    a: f.a.to_dtype(dtype)?.to_device(&device)?,
                    b: f.b.to_dtype(dtype)?.to_device(&device)?,
                    scale: self.scale,
                    dropout: None,
                });
                used.insert(name);
            }
        }
        self.all_used(&used)?;
        Ok(d)
    }

    /// Errors when some adapted weight was never found in the model.
    fn all_used(&self, used: &BTreeSet<String>) -> Result<()> {
        let mut unused: Vec<&str> = self
            .modules
            .keys()
            .filter(|k| !used.contains(*k))
            .map(|s| s.as_str())
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        Err(bad(
            &self.dir,
            format!(
                "{} adapted weights are not in the model (first: {}); is it for another base?",
                unused.len(),
                unused[0]
            ),
        ))
    }
}

/// A weight source that adds an adapter's deltas to the tensors they name. The loader
/// asks [`MergedSource::finish`] afterwards, so a delta whose weight the model never
/// loaded (an adapter for another architecture) is an error, not silently dropped.
pub struct MergedSource<'a> {
    inner: &'a mut dyn WeightSource,
    adapter: &'a LoraAdapter,
    used: BTreeSet<String>,
}

impl<'a> MergedSource<'a> {
    /// Wraps `inner`; `adapter`'s deltas are added in f32, then cast to the weight dtype.
    pub fn new(inner: &'a mut dyn WeightSource, adapter: &'a LoraAdapter) -> Self {
        Self {
            inner,
            adapter,
            used: BTreeSet::new(),
        }
    }

    /// Errors when some delta was never applied.
    pub fn finish(self) -> Result<()> {
        self.adapter.all_used(&self.used)
    }
}

impl WeightSource for MergedSource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.inner.tensor(name, shape)?;
        let Some(d) = self.adapter.delta(name)? else {
            return Ok(t);
        };
        if d.dims() != t.dims() {
            return Err(bad(
                &self.adapter.dir,
                format!(
                    "delta for `{name}` has shape {:?}, the weight {:?}",
                    d.dims(),
                    t.dims()
                ),
            ));
        }
        self.used.insert(name.to_string());
        let merged = (t.to_dtype(DType::F32)? + d.to_device(t.device())?)?;
        Ok(merged.to_dtype(t.dtype())?)
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        if !self.adapter.modules.contains_key(&name) {
            // Untouched projections keep the inner source's form (quantized or not).
            return self.inner.linear(prefix, out, inp, bias);
        }
        let w = self.tensor(&name, &[out, inp])?;
        let b = if bias {
            Some(self.inner.tensor(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::dense(w, b))
    }

    fn tied_lm_head(&mut self, embed: &Tensor) -> Result<Linear> {
        self.inner.tied_lm_head(embed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(HashMap<String, Tensor>);

    impl WeightSource for Fixed {
        fn contains(&self, name: &str) -> bool {
            self.0.contains_key(name)
        }
        fn tensor(&mut self, name: &str, _shape: &[usize]) -> Result<Tensor> {
            Ok(self.0[name].clone())
        }
    }

    fn write_adapter(dir: &Path, module: &str, a: &Tensor, b: &Tensor) {
        std::fs::write(
            dir.join("adapter_config.json"),
            r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#,
        )
        .unwrap();
        let p = format!("base_model.model.{module}");
        candle_core::safetensors::save(
            &HashMap::from([
                (format!("{p}.lora_A.weight"), a.clone()),
                (format!("{p}.lora_B.weight"), b.clone()),
            ]),
            dir.join("adapter_model.safetensors"),
        )
        .unwrap();
    }

    #[test]
    fn merges_scaled_b_a_and_reports_unused_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, 0., 2.], [0., 1., 0.]], &dev).unwrap(); // [r=2, in=3]
        let b = Tensor::new(&[[1f32, 1.], [0., 3.]], &dev).unwrap(); // [out=2, r=2]
        write_adapter(dir.path(), "model.layers.0.self_attn.q_proj", &a, &b);
        let adapter = LoraAdapter::read(dir.path()).unwrap();
        assert_eq!(adapter.scale, 2.0);
        let w = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let name = "model.layers.0.self_attn.q_proj.weight";
        let mut base = Fixed(HashMap::from([(name.to_string(), w)]));
        let mut src = MergedSource::new(&mut base, &adapter);
        let got: Vec<Vec<f32>> = src.tensor(name, &[2, 3]).unwrap().to_vec2().unwrap();
        // W + 2 · B A, with B A = [[1, 1, 2], [0, 3, 0]].
        assert_eq!(got, vec![vec![3., 3., 5.], vec![1., 7., 1.]]);
        src.finish().unwrap();

        let mut other = Fixed(HashMap::new());
        let src = MergedSource::new(&mut other, &adapter);
        let e = src.finish().unwrap_err().to_string();
        assert!(
            e.contains("not in the model") && e.contains("q_proj"),
            "{e}"
        );
    }

    #[test]
    fn bad_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = LoraAdapter::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("adapter_config.json"), "{e}");
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"peft_type": "IA3"}"#,
        )
        .unwrap();
        let e = LoraAdapter::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("only LoRA"), "{e}");
    }
}

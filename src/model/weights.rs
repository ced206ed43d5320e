//! Weight sources: where the decoder's tensors come from, addressed by HF names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::linear::{Linear, LinearWeight};
use super::{ModelError, Result};

/// Supplies tensors by their HF name (`model.layers.0.self_attn.q_proj.weight`, ...).
pub trait WeightSource {
    /// True when the source holds `name`.
    fn contains(&self, name: &str) -> bool;

    /// A dense tensor of exactly `shape`, in the model dtype.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;

    /// The projection `prefix.weight` (`[out, in]`) and, with `bias`, `prefix.bias`.
    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let w = self.tensor(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::dense(w, b))
    }

    /// The output projection when it shares the embedding matrix.
    fn tied_lm_head(&mut self, embed: &Tensor) -> Result<Linear> {
        Ok(Linear::dense(embed.clone(), None))
    }
}

/// Checks a loaded tensor's shape against what the config implies.
pub fn check_shape(name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(ModelError::Weights(format!(
            "tensor `{name}` has shape {:?} but the config implies {:?}",
            t.dims(),
            shape
        )));
    }
    Ok(())
}

/// Safetensors files of a HF checkpoint (single file or sharded with an index).
pub struct SafetensorsSource {
    st: MmapedSafetensors,
    names: BTreeSet<String>,
    dtype: DType,
    device: Device,
    origin: String,
}

impl SafetensorsSource {
    /// Opens `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let files = safetensors_files(dir)?;
        for f in &files {
            if !f.is_file() {
                return Err(ModelError::Weights(format!(
                    "weight file {} is missing",
                    f.display()
                )));
            }
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on
        // nobody truncating a checkpoint while it is being served.
        let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| {
            ModelError::Weights(format!("cannot read safetensors in {}: {e}", dir.display()))
        })?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Self {
            st,
            names,
            dtype,
            device: device.clone(),
            origin: dir.display().to_string(),
        })
    }
}

/// The weight files of a HF checkpoint directory, sharded or not.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Io {
            path: index.display().to_string(),
            source: e,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            ModelError::Weights(format!("{} is not valid JSON: {e}", index.display()))
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                ModelError::Weights(format!("{} has no `weight_map`", index.display()))
            })?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::Weights(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

impl WeightSource for SafetensorsSource {
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(ModelError::Weights(format!(
                "tensor `{name}` is missing from {}",
                self.origin
            )));
        }
        let t = self
            .st
            .load(name, &self.device)
            .map_err(|e| ModelError::Weights(format!("cannot load `{name}`: {e}")))?;
        check_shape(name, &t, shape)?;
        Ok(t.to_dtype(self.dtype)?)
    }
}

/// Wraps a source so that every dense tensor it hands out owns its storage from offset
/// 0. A view into a larger buffer (a slice of a pool, a split of a fused tensor) keeps
/// that buffer alive and, at an odd offset, leaves the data misaligned for cuBLAS, whose
/// fast kernels need 16-byte aligned operands: on an H200 such weights ran GEMMs 5x
/// slower. Tensors that already own their storage pass through without a copy.
pub struct OwnedStorage<'a>(pub &'a mut dyn WeightSource);

/// `t` itself when it is contiguous from the start of its storage, else a fresh copy.
pub fn owned(t: Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        Ok(t)
    } else {
        Ok(t.force_contiguous()?)
    }
}

impl WeightSource for OwnedStorage<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        owned(self.0.tensor(name, shape)?)
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let mut l = self.0.linear(prefix, out, inp, bias)?;
        if let LinearWeight::Dense(w) = &l.weight {
            l.weight = LinearWeight::Dense(owned(w.clone())?);
        }
        l.bias = l.bias.map(owned).transpose()?;
        Ok(l)
    }

    fn tied_lm_head(&mut self, embed: &Tensor) -> Result<Linear> {
        self.0.tied_lm_head(embed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out views at odd offsets into one shared buffer, as a pool would.
    struct Views(Tensor, usize);

    impl WeightSource for Views {
        fn contains(&self, _: &str) -> bool {
            true
        }
        fn tensor(&mut self, _: &str, shape: &[usize]) -> Result<Tensor> {
            let n: usize = shape.iter().product();
            self.1 += 3;
            Ok(self.0.narrow(0, self.1, n)?.reshape(shape)?)
        }
    }

    #[test]
    fn owned_storage_gives_views_their_own_storage_and_keeps_values() -> Result<()> {
        let pool = Tensor::arange(0f32, 100.0, &Device::Cpu)?;
        let mut views = Views(pool, 0);
        let mut src = OwnedStorage(&mut views);
        let t = src.tensor("x", &[2, 4])?;
        assert_eq!(t.layout().start_offset(), 0);
        assert_eq!(
            t.to_vec2::<f32>()?,
            [[3.0, 4.0, 5.0, 6.0], [7.0, 8.0, 9.0, 10.0]]
        );
        let l = src.linear("p", 2, 3, true)?;
        let LinearWeight::Dense(w) = &l.weight else {
            panic!("dense weight expected")
        };
        assert_eq!(w.layout().start_offset(), 0);
        assert_eq!(w.to_vec2::<f32>()?, [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]);
        let b = l.bias.expect("bias");
        assert_eq!(
            (b.layout().start_offset(), b.to_vec1::<f32>()?),
            (0, vec![9.0, 10.0])
        );
        // A tensor that already owns its storage is not copied.
        let fresh = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(owned(fresh.clone())?.id(), fresh.id());
        Ok(())
    }
}

//! GGUF checkpoints (llama architecture): configuration from metadata, weights kept
//! quantized or dequantized, and q/k rows restored from llama.cpp's interleaved-rope
//! permutation to the HF layout our rotary implementation expects.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::{ModelConfig, RopeScaling};
use super::linear::Linear;
use super::weights::{check_shape, WeightSource};
use super::{ModelError, Result};

/// An opened GGUF file.
pub struct GgufFile {
    content: Content,
    reader: BufReader<File>,
    origin: String,
}

impl GgufFile {
    /// Reads the header and metadata of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            ModelError::Weights(format!("{} is not a valid GGUF file: {e}", path.display()))
        })?;
        Ok(Self {
            content,
            reader,
            origin: path.display().to_string(),
        })
    }

    /// Raw metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata string, if present.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        self.content.metadata.get(key).and_then(|v| match v {
            Value::F32(x) => Some(*x as f64),
            Value::F64(x) => Some(*x),
            other => other.to_u64().ok().map(|x| x as f64),
        })
    }

    fn required_usize(&self, key: &str) -> Result<usize> {
        self.meta_f64(key).map(|x| x as usize).ok_or_else(|| {
            ModelError::Config(format!("GGUF {} lacks metadata `{key}`", self.origin))
        })
    }

    /// The decoder configuration described by the metadata.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.meta_str("general.architecture").unwrap_or("<none>");
        if arch != "llama" {
            return Err(ModelError::Config(format!(
                "GGUF architecture `{arch}` is not supported (supported: llama)"
            )));
        }
        let heads = self.required_usize("llama.attention.head_count")?;
        let hidden = self.required_usize("llama.embedding_length")?;
        let layers = self.required_usize("llama.block_count")?;
        let vocab = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => return Err(ModelError::Weights("GGUF lacks `token_embd.weight`".into())),
        };
        let head_dim = self
            .meta_f64("llama.attention.key_length")
            .map(|x| x as usize)
            .unwrap_or(hidden / heads.max(1));
        let rope_scaling = match self.meta_str("llama.rope.scaling.type") {
            Some("linear") => RopeScaling::Linear {
                factor: self.meta_f64("llama.rope.scaling.factor").unwrap_or(1.0),
            },
            None | Some("none") => RopeScaling::None,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "GGUF rope scaling `{other}` is not supported"
                )))
            }
        };
        let cfg = ModelConfig {
            model_type: "llama".into(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.required_usize("llama.feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: self
                .meta_f64("llama.attention.head_count_kv")
                .map(|x| x as usize)
                .unwrap_or(heads),
            head_dim,
            rms_norm_eps: self
                .meta_f64("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            rope_theta: self.meta_f64("llama.rope.freq_base").unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: self.required_usize("llama.context_length")?,
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            attention_bias: false,
            sliding_window: vec![None; layers],
            bos_token_id: self
                .meta_f64("tokenizer.ggml.bos_token_id")
                .map(|x| x as u32),
            eos_token_ids: self
                .meta_f64("tokenizer.ggml.eos_token_id")
                .map(|x| vec![x as u32])
                .unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| ModelError::Weights(format!("GGUF tensor `{name}`: {e}")))
    }

    /// A weight source over this file, keeping matrices quantized when `quantized`.
    pub fn source(
        self,
        cfg: &ModelConfig,
        quantized: bool,
        dtype: DType,
        device: &Device,
    ) -> GgufSource {
        GgufSource {
            file: self,
            quantized,
            dtype,
            device: device.clone(),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            embed_q: None,
        }
    }
}

/// Maps HF tensor names onto GGUF names.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (idx, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{idx}.{mapped}"))
}

/// Row order that undoes llama.cpp's q/k permutation: HF row (h, s, j) of a head of
/// `head_dim` rows is GGUF row (h, j, s), for s in {0,1} and j < head_dim/2.
fn unpermute_rows(rows: usize, heads: usize) -> Vec<usize> {
    let d = rows / heads;
    let half = d / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                order.push(h * d + 2 * j + s);
            }
        }
    }
    order
}

/// Reorders the rows of a quantized matrix without dequantizing (blocks never cross
/// rows because quantization runs along the input dimension).
fn reorder_qtensor_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let data = q.data()?;
    let row_bytes = data.len() / dims[0];
    let mut out = Vec::with_capacity(data.len());
    for &r in order {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(Cow::Owned(out), &Device::Cpu, q.dtype())?;
    Ok(QTensor::new(storage, dims)?)
}

/// Moves a quantized tensor (read on the CPU) onto `device`, still quantized.
fn qtensor_to(q: QTensor, device: &Device) -> Result<QTensor> {
    if device.is_cpu() {
        return Ok(q);
    }
    qtensor_copy(&q, device)
}

/// A copy of a quantized tensor on `device`.
fn qtensor_copy(q: &QTensor, device: &Device) -> Result<QTensor> {
    let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
    Ok(QTensor::new(storage, q.shape().dims().to_vec())?)
}

/// Weights of a GGUF file addressed by HF names.
pub struct GgufSource {
    file: GgufFile,
    quantized: bool,
    dtype: DType,
    device: Device,
    heads: usize,
    kv_heads: usize,
    embed_q: Option<Arc<QTensor>>,
}

impl GgufSource {
    fn load_q(&mut self, hf: &str, shape: &[usize]) -> Result<QTensor> {
        let name =
            gguf_name(hf).ok_or_else(|| ModelError::Weights(format!("no GGUF name for `{hf}`")))?;
        let q = self.file.qtensor(&name)?;
        if q.shape().dims() != shape {
            return Err(ModelError::Weights(format!(
                "GGUF tensor `{name}` has shape {:?} but the config implies {:?}",
                q.shape().dims(),
                shape
            )));
        }
        let heads = if hf.ends_with("q_proj.weight") {
            Some(self.heads)
        } else if hf.ends_with("k_proj.weight") {
            Some(self.kv_heads)
        } else {
            None
        };
        match heads {
            Some(h) => reorder_qtensor_rows(&q, &unpermute_rows(shape[0], h)),
            None => Ok(q),
        }
    }
}

impl WeightSource for GgufSource {
    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.content.tensor_infos.contains_key(&g))
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let q = self.load_q(name, shape)?;
        let t = q.dequantize(&self.device)?;
        check_shape(name, &t, shape)?;
        if name == "model.embed_tokens.weight" {
            self.embed_q = Some(Arc::new(q));
        }
        Ok(t.to_dtype(self.dtype)?)
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        if bias {
            return Err(ModelError::Weights(format!(
                "GGUF llama checkpoints carry no bias for `{prefix}`"
            )));
        }
        let q = self.load_q(&format!("{prefix}.weight"), &[out, inp])?;
        if self.quantized {
            Ok(Linear::quantized(QMatMul::from_qtensor(qtensor_to(
                q,
                &self.device,
            )?)?))
        } else {
            Ok(Linear::dense(
                q.dequantize(&self.device)?.to_dtype(self.dtype)?,
                None,
            ))
        }
    }

    fn tied_lm_head(&mut self, embed: &Tensor) -> Result<Linear> {
        match (&self.embed_q, self.quantized) {
            (Some(q), true) if self.device.is_cpu() => {
                Ok(Linear::quantized(QMatMul::from_arc(q.clone())?))
            }
            (Some(q), true) => Ok(Linear::quantized(QMatMul::from_qtensor(qtensor_copy(
                q,
                &self.device,
            )?)?)),
            _ => Ok(Linear::dense(embed.clone(), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: gguf row (h, j, s) holds HF row (h, s, j).
        let (heads, d) = (2, 6);
        let hf: Vec<usize> = (0..heads * d).collect();
        let mut gguf = vec![0; heads * d];
        for h in 0..heads {
            for s in 0..2 {
                for j in 0..d / 2 {
                    gguf[h * d + 2 * j + s] = hf[h * d + s * (d / 2) + j];
                }
            }
        }
        let restored: Vec<usize> = unpermute_rows(heads * d, heads)
            .iter()
            .map(|&r| gguf[r])
            .collect();
        assert_eq!(restored, hf);
    }

    #[test]
    fn maps_names() {
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight").unwrap(),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(gguf_name("lm_head.weight").unwrap(), "output.weight");
        assert!(gguf_name("model.layers.0.self_attn.q_proj.bias").is_none());
    }
}

//! Architecture description of a Llama-family decoder, read from HF `config.json` or
//! from GGUF metadata. Every field the decoder needs is validated here so that a bad
//! checkpoint fails at load time with the name of the offending field.

use serde::Deserialize;
use serde_json::Value;

use super::config_read::{opt_number, opt_token_ids, read};
use super::ModelError;

/// The `model_type` values this decoder implements. They differ only in details the
/// config already describes (qkv bias, sliding window, tied embeddings).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2"];

/// How rotary frequencies are derived from `rope_theta`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (HF `rope_type: linear`).
    Linear { factor: f64 },
    /// Llama 3.1 frequency-dependent scaling (HF `rope_type: llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Everything the decoder needs to know about an architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub attention_bias: bool,
    /// Per-layer sliding attention window, `None` for full attention.
    pub sliding_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// `rope_scaling` / `rope_parameters` as written in `config.json`.
#[derive(Debug, Default, Deserialize)]
struct HfRope {
    rope_type: Option<String>,
    /// The older spelling of `rope_type`.
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "opt_number")]
    rope_theta: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    factor: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    low_freq_factor: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    high_freq_factor: Option<f64>,
    #[serde(default, deserialize_with = "opt_number")]
    original_max_position_embeddings: Option<f64>,
}

/// The keys of a HF `config.json` the decoder reads. Every other key (architectures,
/// torch_dtype, ...) belongs to transformers and is left alone.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(deserialize_with = "number")]
    rms_norm_eps: f64,
    #[serde(default, deserialize_with = "opt_number")]
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRope>,
    /// transformers 5 moves the rope settings here.
    rope_parameters: Option<HfRope>,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    #[serde(default, deserialize_with = "opt_token_ids")]
    bos_token_id: Option<Vec<u32>>,
    #[serde(default, deserialize_with = "opt_token_ids")]
    eos_token_id: Option<Vec<u32>>,
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    opt_number(d)?.ok_or_else(|| serde::de::Error::custom("must be a number"))
}

impl HfRope {
    fn scaling(&self, at: &str) -> Result<RopeScaling, ModelError> {
        let need = |v: Option<f64>, k: &str| {
            v.ok_or_else(|| {
                ModelError::Config(format!("config.json is missing the field `{at}.{k}`"))
            })
        };
        match self
            .rope_type
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("default")
        {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: need(self.factor, "factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: need(self.factor, "factor")?,
                low_freq_factor: need(self.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(self.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: need(
                    self.original_max_position_embeddings,
                    "original_max_position_embeddings",
                )?,
            }),
            other => Err(ModelError::Config(format!(
                "unsupported rope_type `{other}` (supported: default, linear, llama3)"
            ))),
        }
    }
}

impl ModelConfig {
    /// Parses a HF `config.json` document; an error names the field.
    pub fn from_hf_json(text: &str) -> Result<Self, ModelError> {
        let v: HfConfig = read(&mut serde_json::Deserializer::from_str(text))
            .map_err(|e| ModelError::Config(format!("config.json: {e}")))?
            .value;
        let model_type = v.model_type;
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(ModelError::Config(format!(
                "unknown model_type `{model_type}` (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        let num_key_value_heads = v.num_key_value_heads.unwrap_or(v.num_attention_heads);
        let head_dim = v
            .head_dim
            .unwrap_or(v.hidden_size / v.num_attention_heads.max(1));
        // transformers 5 moves rope settings under `rope_parameters`; older configs
        // keep `rope_theta` at the top level and `rope_scaling` beside it.
        let (rope_theta, rope_scaling) = match &v.rope_parameters {
            Some(p) => (
                p.rope_theta.ok_or_else(|| {
                    ModelError::Config(
                        "config.json is missing the field `rope_parameters.rope_theta`".into(),
                    )
                })?,
                p.scaling("rope_parameters")?,
            ),
            None => (
                v.rope_theta.unwrap_or(10000.0),
                match &v.rope_scaling {
                    Some(s) => s.scaling("rope_scaling")?,
                    None => RopeScaling::None,
                },
            ),
        };
        let window = match model_type.as_str() {
            "mistral" => v.sliding_window,
            "qwen2" if v.use_sliding_window == Some(true) => v.sliding_window,
            _ => None,
        };
        let max_window_layers = match model_type.as_str() {
            "qwen2" => v.max_window_layers.unwrap_or(0),
            _ => 0,
        };
        let sliding_window = (0..v.num_hidden_layers)
            .map(|l| window.filter(|_| l >= max_window_layers))
            .collect();
        if v.mlp_bias == Some(true) {
            return Err(ModelError::Config(
                "`mlp_bias: true` is not supported".into(),
            ));
        }
        if let Some(act) = v.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(ModelError::Config(format!(
                "hidden_act `{act}` is not supported (supported: silu)"
            )));
        }
        let attention_bias = match model_type.as_str() {
            "qwen2" => true,
            _ => v.attention_bias.unwrap_or(false),
        };
        let cfg = ModelConfig {
            vocab_size: v.vocab_size,
            hidden_size: v.hidden_size,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: v.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: v.max_position_embeddings,
            tie_word_embeddings: v.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            sliding_window,
            bos_token_id: v.bos_token_id.unwrap_or_default().first().copied(),
            eos_token_ids: v.eos_token_id.unwrap_or_default(),
            model_type,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the relations between fields that the decoder relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("num_attention_heads and num_key_value_heads must be > 0".into());
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim must be even and > 0, got {}",
                self.head_dim
            ));
        }
        if self.sliding_window.contains(&Some(0)) {
            return bad("`sliding_window` must be > 0 (a window of 0 sees no token)".into());
        }
        for (name, n) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if n == 0 {
                return bad(format!("`{name}` must be > 0"));
            }
        }
        Ok(())
    }

    /// Serialises back to a HF `config.json` (used when training writes a checkpoint).
    pub fn to_hf_json(&self) -> Value {
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3", "factor": factor,
                "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": *original_max_position_embeddings as u64,
            }),
        };
        let arch = match self.model_type.as_str() {
            "mistral" => "MistralForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            _ => "LlamaForCausalLM",
        };
        let mut v = serde_json::json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if self.model_type == "llama" {
            v["attention_bias"] = Value::Bool(self.attention_bias);
        }
        if let Some(w) = self.sliding_window.iter().flatten().next() {
            v["sliding_window"] = (*w).into();
        }
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = b.into();
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = (*one).into(),
            many => v["eos_token_id"] = many.into(),
        }
        v
    }

    /// Total number of parameters (embeddings counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let layer = h * q + 2 * h * kv + q * h + bias + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "llama", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "max_position_embeddings": 32
        })
    }

    #[test]
    fn parses_minimal_llama() {
        let c = ModelConfig::from_hf_json(&base().to_string()).unwrap();
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn unknown_model_type_is_named() {
        let mut v = base();
        v["model_type"] = "gpt2".into();
        let e = ModelConfig::from_hf_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown model_type `gpt2`"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("intermediate_size");
        let e = ModelConfig::from_hf_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`intermediate_size`"), "{e}");
    }

    #[test]
    fn rejects_unknown_rope_type_and_bad_gqa() {
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 2.0});
        let e = ModelConfig::from_hf_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("yarn"), "{e}");
        let mut v = base();
        v["num_attention_heads"] = 3.into();
        v["num_key_value_heads"] = 2.into();
        v["head_dim"] = 4.into();
        assert!(ModelConfig::from_hf_json(&v.to_string()).is_err());
    }

    #[test]
    fn rejects_a_zero_sliding_window() {
        let mut v = base();
        v["model_type"] = "mistral".into();
        v["sliding_window"] = 0.into();
        let e = ModelConfig::from_hf_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sliding_window"), "{e}");
        v["sliding_window"] = 4.into();
        assert!(ModelConfig::from_hf_json(&v.to_string()).is_ok());
    }

    #[test]
    fn round_trips_through_hf_json() {
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16});
        let c = ModelConfig::from_hf_json(&v.to_string()).unwrap();
        let again = ModelConfig::from_hf_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(c, again);
    }
}

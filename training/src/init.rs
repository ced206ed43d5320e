//! `training init`: a tiny randomly initialised HF checkpoint (for tests and demos).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use self_judge_model::{ModelConfig, RopeScaling, SeededNormal};
use self_judge_tokenizer::{ChatTemplate, TextTokenizer};

use crate::checkpoint::Checkpoint;

/// ChatML, used when no template is given.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Arguments of `training init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// llama, mistral or qwen2.
    #[arg(long, default_value = "llama")]
    pub arch: String,
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Default: 4 x hidden.
    #[arg(long)]
    pub intermediate: Option<usize>,
    #[arg(long, default_value_t = 1024)]
    pub max_positions: usize,
    #[arg(long, default_value_t = 10000.0)]
    pub rope_theta: f64,
    /// Untie the LM head from the embeddings.
    #[arg(long)]
    pub untied: bool,
    /// A `tokenizer.json`; the vocabulary size follows it.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The EOS token string (must be in the tokenizer).
    #[arg(long, default_value = "<|im_end|>")]
    pub eos_token: String,
    /// Jinja chat template file (default: ChatML).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Standard deviation of the random weights (HF initializer_range).
    #[arg(long, default_value_t = 0.02)]
    pub init_std: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the checkpoint.
pub fn run(a: InitArgs) -> anyhow::Result<()> {
    let inner = tokenizers::Tokenizer::from_file(&a.tokenizer)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.tokenizer.display()))?;
    let eos = inner
        .token_to_id(&a.eos_token)
        .with_context(|| format!("EOS token `{}` is not in the tokenizer", a.eos_token))?;
    let tokenizer = TextTokenizer::new(inner, None, Some(a.eos_token.clone()), &[eos]);
    let template = match &a.chat_template {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => CHATML.to_string(),
    };
    ChatTemplate::new(&template)?;
    anyhow::ensure!(
        a.heads > 0 && a.hidden.is_multiple_of(a.heads),
        "--hidden must be a multiple of --heads"
    );
    let cfg = ModelConfig {
        model_type: a.arch.clone(),
        vocab_size: tokenizer.vocab_size(),
        hidden_size: a.hidden,
        intermediate_size: a.intermediate.unwrap_or(4 * a.hidden),
        num_hidden_layers: a.layers,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads,
        head_dim: a.hidden / a.heads,
        rms_norm_eps: 1e-6,
        rope_theta: a.rope_theta,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: a.max_positions,
        tie_word_embeddings: !a.untied,
        attention_bias: a.arch == "qwen2",
        sliding_window: vec![None; a.layers],
        bos_token_id: None,
        eos_token_ids: vec![eos],
    };
    // Round-trip through config.json validation (architecture, GQA, head_dim).
    let cfg = ModelConfig::from_hf_json(&cfg.to_hf_json().to_string())?;
    let weights = random_weights(&cfg, a.init_std, a.seed)?;
    Checkpoint {
        config: &cfg,
        weights,
        tokenizer: &tokenizer,
        chat_template: Some(&template),
    }
    .save(&a.out)?;
    eprintln!(
        "wrote {} ({} parameters)",
        a.out.display(),
        cfg.num_parameters()
    );
    Ok(())
}

/// Normal(0, std) matrices and biases, ones for the norms; deterministic in `seed`.
pub fn random_weights(
    cfg: &ModelConfig,
    std: f64,
    seed: u64,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut rng = SeededNormal::new(seed);
    let mut normal = |shape: &[usize]| -> anyhow::Result<Tensor> {
        Ok(rng.tensor(0.0, std, shape, &Device::Cpu)?)
    };
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".to_string(), normal(&[v, h])?);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![i, h]),
            ("mlp.up_proj.weight", vec![i, h]),
            ("mlp.down_proj.weight", vec![h, i]),
        ] {
            w.insert(format!("{p}.{name}"), normal(&shape)?);
        }
        if cfg.attention_bias {
            for (name, n) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                w.insert(format!("{p}.self_attn.{name}.bias"), normal(&[n])?);
            }
        }
        for name in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            w.insert(
                format!("{p}.{name}"),
                Tensor::ones(h, DType::F32, &Device::Cpu)?,
            );
        }
    }
    w.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(h, DType::F32, &Device::Cpu)?,
    );
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".to_string(), normal(&[v, h])?);
    }
    Ok(w)
}

//! Random-weight Llama models of the GPU benchmarks' shapes, shared by `bench_gpu` and
//! `bench_judge` (included with `#[path]`; not an example of its own).

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use self_judge::model::weights::WeightSource;
use self_judge::model::ModelConfig;

/// Random weights from a pool of N(0, 0.02²) values made once on the host and copied to
/// the device; each tensor is a window of the pool (repeated as needed), RMSNorm
/// weights are ones. No cuRAND needed, and building a 1.5B model takes well under a
/// second on a GPU.
pub struct RandomSource {
    pool: Tensor,
    dtype: DType,
    device: Device,
    next: usize,
}

impl RandomSource {
    pub fn new(dtype: DType, device: &Device) -> anyhow::Result<Self> {
        let n = 1 << 22;
        let mut rng = StdRng::seed_from_u64(0);
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller: one normal from two uniforms.
                let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                0.02 * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect();
        let pool = Tensor::from_vec(vals, n, device)?.to_dtype(dtype)?;
        Ok(Self {
            pool,
            dtype,
            device: device.clone(),
            next: 0,
        })
    }
}

impl WeightSource for RandomSource {
    fn contains(&self, name: &str) -> bool {
        name != "lm_head.weight"
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> self_judge::model::Result<Tensor> {
        if name.ends_with("norm.weight") {
            return Ok(Tensor::ones(shape, self.dtype, &self.device)?);
        }
        let numel: usize = shape.iter().product();
        let n = self.pool.dim(0)?;
        let start = self.next % n;
        self.next += 1_000_003;
        let reps = (start + numel).div_ceil(n);
        let src = if reps > 1 {
            self.pool.repeat(reps)?
        } else {
            self.pool.clone()
        };
        // A fresh allocation: `copy()` would clone the whole pool and keep the view's
        // offset, which leaves the weight misaligned for cuBLAS (5x slower GEMMs).
        Ok(src
            .narrow(0, start, numel)?
            .reshape(shape)?
            .force_contiguous()?)
    }
}

/// The benchmark shapes: Llama architecture with Qwen2.5 dimensions, tied embeddings,
/// vocab 151936 (Qwen's tokenizers fit), `<|im_end|>` (151645) as EOS: `0.5b`, `1.5b`,
/// `tiny-qwen` (the same vocabulary on a tiny body, for CPU smoke runs) and `tiny`
/// (vocab 320, for random-token runs).
pub fn shape_config(name: &str) -> anyhow::Result<ModelConfig> {
    let (h, inter, layers, heads, kv, vocab) = match name {
        "tiny" => (64, 128, 2, 4, 2, 320),
        "tiny-qwen" => (64, 128, 2, 4, 2, 151936),
        "0.5b" => (896, 4864, 24, 14, 2, 151936),
        "1.5b" => (1536, 8960, 28, 12, 2, 151936),
        other => anyhow::bail!("unknown shape `{other}` (0.5b, 1.5b, tiny, tiny-qwen)"),
    };
    let v = json!({"model_type": "llama", "vocab_size": vocab, "hidden_size": h,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "max_position_embeddings": 4096, "tie_word_embeddings": true,
        "eos_token_id": 151645});
    Ok(ModelConfig::from_hf_json(&v.to_string())?)
}

/// (all parameters, parameters outside the embedding) of a tied-embedding config.
pub fn params(c: &ModelConfig) -> (usize, usize) {
    let (h, q, kv) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let layer = 2 * h * q + 2 * h * kv + 3 * h * c.intermediate_size + 2 * h;
    let body = c.num_hidden_layers * layer + h;
    (body + c.vocab_size * h, body)
}

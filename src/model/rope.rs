//! Rotary position embeddings (non-interleaved "rotate half" layout, as HF Llama).
//! GGUF checkpoints store q/k rows permuted for the interleaved layout; the loader
//! undoes that permutation so one rotary implementation serves every format.

use candle_core::{DType, Device, Tensor, D};

use super::config::{ModelConfig, RopeScaling};
use super::ops::Pass;
use super::Result;

/// Precomputed cos/sin tables indexed by absolute position.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
}

/// Inverse frequencies exactly as HF computes them (float32 powers, then scaling).
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let raw: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => raw,
        RopeScaling::Linear { factor } => raw.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_ctx,
        } => {
            let (factor, low, high, old) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                old_ctx as f32,
            );
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            raw.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl Rotary {
    /// Builds tables for positions `0..max_positions` in `dtype`.
    pub fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let freqs = inv_freq(cfg);
        let half = freqs.len();
        let max_positions = cfg.max_position_embeddings;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &freqs {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (max_positions, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_positions, half), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            max_positions,
        })
    }

    /// Largest position + 1 the tables cover.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Gathers the `[T, head_dim/2]` cos and sin rows for the given positions.
    pub fn tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?,
            self.sin.index_select(positions, 0)?,
        ))
    }

    /// Rotates `[T, heads, d]` by the tables of [`Self::tables`], by the kernel that fits
    /// `pass` (candle's has no backward).
    pub fn apply(xs: &Tensor, cos: &Tensor, sin: &Tensor, pass: Pass) -> Result<Tensor> {
        if pass.differentiable() {
            Ok(super::autograd::rope(xs, cos, sin)?)
        } else {
            Self::apply_fused(xs, cos, sin)
        }
    }

    /// Rotates `xs` of shape `[T, heads, head_dim]` with the fused kernel (no backward).
    pub fn apply_fused(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let xs = xs.unsqueeze(0)?.contiguous()?;
        Ok(candle_nn::rotary_emb::rope_thd(&xs, cos, sin)?.squeeze(0)?)
    }

    /// The same rotation from differentiable primitives (the reference the training
    /// op with its own backward is tested against).
    pub fn apply_differentiable(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = xs.dim(D::Minus1)? / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
        let x1 = xs.narrow(D::Minus1, 0, half)?;
        let x2 = xs.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((xs.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_differentiable_agree() {
        let cfg = ModelConfig::from_hf_json(
            &serde_json::json!({"model_type": "llama", "vocab_size": 4, "hidden_size": 16,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 64})
            .to_string(),
        )
        .unwrap();
        let dev = Device::Cpu;
        let rot = Rotary::new(&cfg, DType::F32, &dev).unwrap();
        let xs = crate::seeded_randn(1, 0.0, 1.0, (5, 2, 8), &dev).unwrap();
        let pos = Tensor::new(&[0u32, 3, 7, 1, 60], &dev).unwrap();
        let (c, s) = rot.tables(&pos).unwrap();
        let a = Rotary::apply_fused(&xs, &c, &s).unwrap();
        let b = Rotary::apply_differentiable(&xs, &c, &s).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
}

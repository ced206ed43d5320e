//! The Llama-family decoder with a packed variable-length forward.
//!
//! All sequences of a batch go through every projection as one `[T, hidden]` matrix;
//! only attention is split per sequence, so no padding FLOPs are spent. Each sequence
//! may continue a [`KvCache`] (generation, or a shared judge prefix).

use candle_core::{DType, Device, Tensor};

pub use super::attention::AttentionPath;
use super::attention::{attend_layer, AttentionOps, BatchPlan, Masks};
use super::batch::PackedBatch;
use super::config::ModelConfig;
use super::flash::VarlenLens;
use super::kv::KvCache;
use super::linear::Linear;
use super::ops::OpsMode;
use super::rope::Rotary;
use super::weights::{OwnedStorage, WeightSource};
use super::{ModelError, Result};

/// What a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `[num_seqs, vocab]` f32 logits at each sequence's last position only.
    LastLogits,
    /// `[num_tokens, vocab]` logits at every position (training).
    AllLogits,
    /// `[num_tokens, hidden]` final hidden states (after the last norm).
    Hidden,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Layer {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub input_layernorm: Tensor,
    pub post_attention_layernorm: Tensor,
    pub sliding_window: Option<usize>,
}

/// A loaded decoder. Cheap to clone (tensors are shared).
#[derive(Debug, Clone)]
pub struct Decoder {
    pub cfg: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    rotary: Rotary,
    mode: OpsMode,
    attention: AttentionPath,
    /// The fused kernels of [`super::fused`] for inference on an accelerator.
    fused: bool,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Builds the decoder from weights named as in HF checkpoints.
    pub fn load(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let src = &mut OwnedStorage(src);
        let h = cfg.hidden_size;
        let q_out = cfg.num_attention_heads * cfg.head_dim;
        let kv_out = cfg.num_key_value_heads * cfg.head_dim;
        let embed_tokens = src.tensor("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let bias = cfg.attention_bias;
            layers.push(Layer {
                q_proj: src.linear(&format!("{p}.self_attn.q_proj"), q_out, h, bias)?,
                k_proj: src.linear(&format!("{p}.self_attn.k_proj"), kv_out, h, bias)?,
                v_proj: src.linear(&format!("{p}.self_attn.v_proj"), kv_out, h, bias)?,
                o_proj: src.linear(&format!("{p}.self_attn.o_proj"), h, q_out, false)?,
                gate_proj: src.linear(
                    &format!("{p}.mlp.gate_proj"),
                    cfg.intermediate_size,
                    h,
                    false,
                )?,
                up_proj: src.linear(
                    &format!("{p}.mlp.up_proj"),
                    cfg.intermediate_size,
                    h,
                    false,
                )?,
                down_proj: src.linear(
                    &format!("{p}.mlp.down_proj"),
                    h,
                    cfg.intermediate_size,
                    false,
                )?,
                input_layernorm: src.tensor(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attention_layernorm: src
                    .tensor(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                sliding_window: cfg.sliding_window.get(i).copied().flatten(),
            });
        }
        let norm = src.tensor("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings || !src.contains("lm_head.weight") {
            src.tied_lm_head(&embed_tokens)?
        } else {
            src.linear("lm_head", cfg.vocab_size, h, false)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg, dtype, device)?,
            mode: OpsMode::Fused,
            attention: AttentionPath::default_for(device, dtype, cfg.head_dim),
            fused: true,
            dtype,
            device: device.clone(),
        })
    }

    /// Switches between fused (inference) and differentiable (training) operations.
    pub fn set_mode(&mut self, mode: OpsMode) {
        self.mode = mode;
    }

    /// The current ops mode.
    pub fn mode(&self) -> OpsMode {
        self.mode
    }

    /// Chooses the attention path (default: [`AttentionPath::default_for`]). `Batched`
    /// also runs on the CPU, so the accelerator path can be checked there; `Flash` is
    /// refused where the build, device or dtype cannot run it.
    pub fn set_attention_path(&mut self, path: AttentionPath) -> Result<()> {
        if path == AttentionPath::Flash {
            let why = super::flash::unavailable_reason(&self.device, self.dtype, self.cfg.head_dim);
            if let Some(why) = why {
                return Err(ModelError::Config(why));
            }
        }
        self.attention = path;
        Ok(())
    }

    /// The attention path in use.
    pub fn attention_path(&self) -> AttentionPath {
        self.attention
    }

    /// Whether inference uses the fused ops of [`super::fused`] (the default): on the
    /// batched attention path (any device) the head transposes and one pass of scale,
    /// causal mask and f32 softmax; on an accelerator also SiLU·up and residual add with
    /// RMSNorm. Off, the same math runs as candle's separate ops (for comparison in the
    /// benchmarks).
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused = on;
    }

    /// Activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Largest number of positions (cached + new) one sequence may have.
    pub fn max_positions(&self) -> usize {
        self.rotary.max_positions()
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        Ok(match self.mode {
            OpsMode::Fused => candle_nn::ops::rms_norm(x, w, eps)?,
            OpsMode::Differentiable => candle_nn::ops::rms_norm_slow(x, w, eps)?,
        })
    }

    /// `(x + y, rms_norm(x + y, w))`: the residual add and the norm after it, one fused
    /// kernel on an accelerator (see [`Self::set_fused_kernels`]).
    fn add_rms_norm(&self, x: &Tensor, y: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.fused_on_device() && x.rank() == 2 {
            return super::fused::add_rms_norm(x, y, w, self.cfg.rms_norm_eps);
        }
        let r = (x + y)?;
        let h = self.rms_norm(&r, w)?;
        Ok((r, h))
    }

    /// Whether the fused kernels run: inference on an accelerator in a float dtype
    /// (on the CPU candle's own multi-threaded ops are faster than one loop).
    fn fused_on_device(&self) -> bool {
        self.mode == OpsMode::Fused
            && self.fused
            && !self.device.is_cpu()
            && super::fused::supported(self.dtype)
    }

    /// Runs the packed batch. With `caches`, sequence i continues `caches[i]` (its
    /// positions start at the cached length) and its new keys/values are appended.
    pub fn forward(
        &self,
        batch: &PackedBatch,
        mut caches: Option<&mut [KvCache]>,
        output: Output,
    ) -> Result<Tensor> {
        let n_seqs = batch.num_seqs();
        if n_seqs == 0 {
            return Err(ModelError::Input("empty batch".into()));
        }
        if let Some(c) = caches.as_deref() {
            if c.len() != n_seqs {
                return Err(ModelError::Input(format!(
                    "{} caches for {n_seqs} sequences",
                    c.len()
                )));
            }
        }
        let mut past = vec![0usize; n_seqs];
        if let Some(c) = caches.as_deref() {
            for (p, c) in past.iter_mut().zip(c) {
                *p = c.len();
            }
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(bad) = batch.tokens.iter().find(|&&t| t >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let mut positions = Vec::with_capacity(batch.num_tokens());
        for (i, &p) in past.iter().enumerate() {
            let end = p + batch.seq_len(i);
            if end > self.max_positions() {
                return Err(ModelError::Input(format!(
                    "sequence {i} needs {end} positions but the model's context is {}",
                    self.max_positions()
                )));
            }
            positions.extend((p..end).map(|x| x as u32));
        }
        let t = batch.num_tokens();
        let ids = Tensor::from_slice(&batch.tokens, t, &self.device)?;
        let pos = Tensor::from_vec(positions, t, &self.device)?;
        let (cos, sin) = self.rotary.tables(&pos)?;
        let mut x = self.embed_tokens.index_select(&ids, 0)?;
        let flash = self.attention == AttentionPath::Flash && self.mode == OpsMode::Fused;
        let mut plan = BatchPlan {
            batch,
            past: &past,
            runs: equal_length_runs(batch),
            masks: Masks::new(self.dtype, &self.device),
            flash: if flash {
                let new: Vec<usize> = (0..n_seqs).map(|i| batch.seq_len(i)).collect();
                Some(VarlenLens::new(&new, &past, &self.device)?)
            } else {
                None
            },
        };
        let (hq, hkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.num_key_value_heads,
            self.cfg.head_dim,
        );
        let first = self
            .layers
            .first()
            .ok_or_else(|| ModelError::Config("a decoder needs at least one layer".into()))?;
        let mut h = self.rms_norm(&x, &first.input_layernorm)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let q = layer.q_proj.forward(&h)?.reshape((t, hq, hd))?;
            let k = layer.k_proj.forward(&h)?.reshape((t, hkv, hd))?;
            let v = layer.v_proj.forward(&h)?.reshape((t, hkv, hd))?;
            let (q, k) = match self.mode {
                OpsMode::Fused => (
                    Rotary::apply_fused(&q, &cos, &sin)?,
                    Rotary::apply_fused(&k, &cos, &sin)?,
                ),
                OpsMode::Differentiable => (
                    Rotary::apply_differentiable(&q, &cos, &sin)?,
                    Rotary::apply_differentiable(&k, &cos, &sin)?,
                ),
            };
            let ops = AttentionOps {
                path: self.attention,
                mode: self.mode,
                fused: self.fused,
            };
            let attn = attend_layer(
                ops,
                li,
                (&q, &k, &v),
                layer.sliding_window,
                &mut plan,
                caches.as_deref_mut(),
            )?;
            (x, h) = self.add_rms_norm(
                &x,
                &layer.o_proj.forward(&attn)?,
                &layer.post_attention_layernorm,
            )?;
            let (gate, up) = (layer.gate_proj.forward(&h)?, layer.up_proj.forward(&h)?);
            let inner = if self.fused_on_device() {
                super::fused::silu_mul(&gate, &up)?
            } else {
                (gate.silu()? * up)?
            };
            let mlp = layer.down_proj.forward(&inner)?;
            match self.layers.get(li + 1) {
                Some(next) => (x, h) = self.add_rms_norm(&x, &mlp, &next.input_layernorm)?,
                None => x = (x + mlp)?,
            }
        }
        match output {
            Output::LastLogits => {
                let last: Vec<u32> = batch.cu_seqlens[1..]
                    .iter()
                    .map(|&e| e as u32 - 1)
                    .collect();
                let idx = Tensor::from_vec(last, n_seqs, &self.device)?;
                let h = self.rms_norm(&x.index_select(&idx, 0)?, &self.norm)?;
                Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
            }
            Output::AllLogits => {
                let h = self.rms_norm(&x, &self.norm)?;
                Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
            }
            Output::Hidden => self.rms_norm(&x, &self.norm),
        }
    }

    /// Convenience: last-position logits of each sequence, `[n, vocab]`.
    pub fn last_logits<S: AsRef<[u32]>>(&self, seqs: &[S]) -> Result<Tensor> {
        self.forward(&PackedBatch::new(seqs)?, None, Output::LastLogits)
    }
}

/// Maximal runs of consecutive sequences of equal length, as (first, count).
fn equal_length_runs(batch: &PackedBatch) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in 0..batch.num_seqs() {
        match runs.last_mut() {
            Some((first, count)) if batch.seq_len(*first) == batch.seq_len(i) => *count += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

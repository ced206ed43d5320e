//! The Llama-family decoder with a packed variable-length forward.
//!
//! All sequences of a batch go through every projection as one `[T, hidden]` matrix;
//! only attention is split per sequence, so no padding FLOPs are spent. Each sequence
//! may continue a [`KvCache`] (generation, or a shared judge prefix).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

pub use super::attention::AttentionPath;
use super::attention::{AttentionOps, BatchPlan, Masks};
use super::batch::PackedBatch;
use super::checkpoint::{checkpointed, GradientCheckpointing, LayerRun};
use super::config::ModelConfig;
use super::flash::VarlenLens;
use super::kv::KvCache;
use super::layer::BlockInputs;
pub use super::layer::Layer;
use super::linear::Linear;
use super::ops::Pass;
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

/// A loaded decoder. Cheap to clone (tensors are shared).
#[derive(Debug, Clone)]
pub struct Decoder {
    pub cfg: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    rotary: Rotary,
    attention: AttentionPath,
    /// The fused kernels of [`super::fused`] for inference on an accelerator.
    fused_kernels: bool,
    /// Gradient checkpointing of training passes, with the store the recomputed layers
    /// leave their weight gradients in.
    checkpointing: Option<Arc<GradientCheckpointing>>,
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
            attention: AttentionPath::default_for(device, dtype, cfg.head_dim),
            fused_kernels: true,
            checkpointing: None,
            dtype,
            device: device.clone(),
        })
    }

    /// The same decoder without its LoRA adapters (the reference model under LoRA);
    /// the weights are shared, not copied.
    pub fn without_adapters(&self) -> Self {
        let mut d = self.clone();
        d.layers = self.layers.iter().map(Layer::without_adapters).collect();
        d.lm_head.lora = None;
        d.checkpointing = None;
        d
    }

    /// Packs every frozen f32 projection on the CPU, the LM head included, once for the
    /// serving kernel of [`super::packed`] (the dense copies are released; a tied LM head
    /// keeps the embedding). Returns how many projections it packed. Serving only: a
    /// packed projection refuses a training pass.
    pub fn pack_weights(&mut self) -> Result<usize> {
        let mut n = 0;
        for layer in &mut self.layers {
            for (_, p) in layer.projections_named_mut() {
                n += usize::from(p.pack()?);
            }
        }
        n += usize::from(self.lm_head.pack()?);
        Ok(n)
    }

    /// A serving copy of a decoder that may be in training: every projection weight
    /// (the LM head included) detached from its graph and packed as
    /// [`Self::pack_weights`] packs, so it computes what the server computes; `self` is
    /// untouched. The copy holds its own packed weights.
    pub fn packed_snapshot(&self) -> Result<Self> {
        let mut d = self.clone();
        for layer in &mut d.layers {
            for (_, p) in layer.projections_named_mut() {
                p.detach_weight();
            }
        }
        d.lm_head.detach_weight();
        d.pack_weights()?;
        Ok(d)
    }

    /// Dense weights back in place of packed ones (the previous path, for comparisons).
    pub fn unpack_weights(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for (_, p) in layer.projections_named_mut() {
                p.unpack()?;
            }
        }
        self.lm_head.unpack()
    }

    /// Runs every projection (the LM head included) in `dtype`, with f32 everything
    /// else: norms, rotary, attention, log-probabilities (HF's `bf16: true`, autocast,
    /// for the matrix products that carry almost all the work); `None` turns it off.
    /// Trained f32 weights stay the master copy: the casts are part of the graph.
    pub fn set_compute_dtype(&mut self, dtype: Option<DType>) {
        for layer in &mut self.layers {
            for (_, p) in layer.projections_named_mut() {
                p.compute = dtype;
            }
        }
        self.lm_head.compute = dtype;
    }

    /// Turns gradient checkpointing of training passes on (with the store the trainer
    /// merges weight gradients from after each backward) or off. Passes with caches and
    /// decoders with nothing trainable run as before.
    pub fn set_gradient_checkpointing(&mut self, store: Option<Arc<GradientCheckpointing>>) {
        self.checkpointing = store;
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

    /// Whether inference uses the fused ops of [`super::fused`] (the default): one pass
    /// of scale, causal mask and f32 softmax in attention (and on the batched path the
    /// head transposes), SiLU·up, and the residual add with RMSNorm, on any device. Off,
    /// the same math runs as candle's separate ops (for comparison in the benchmarks).
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused_kernels = on;
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

    fn rms_norm(&self, x: &Tensor, w: &Tensor, pass: Pass) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        Ok(if pass.differentiable() {
            super::autograd::rms_norm(x, w, eps)?
        } else {
            candle_nn::ops::rms_norm(x, w, eps)?
        })
    }

    /// `(x + y, rms_norm(x + y, w))`: the residual add and the norm after it, one fused
    /// op in inference (see [`Self::set_fused_kernels`]).
    fn add_rms_norm(
        &self,
        x: &Tensor,
        y: &Tensor,
        w: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        if self.fused_ops(pass) && x.rank() == 2 {
            return super::fused::add_rms_norm(x, y, w, self.cfg.rms_norm_eps);
        }
        let r = (x + y)?;
        let h = self.rms_norm(&r, w, pass)?;
        Ok((r, h))
    }

    /// Whether the fused kernels run: inference in a float dtype, on an accelerator
    /// (one kernel each) or on the CPU (rayon loops on the pool the packed projections
    /// use: one pass instead of candle's two or three, and no second thread pool to
    /// wait on).
    fn fused_ops(&self, pass: Pass) -> bool {
        !pass.differentiable() && self.fused_kernels && super::fused::supported(self.dtype)
    }

    /// Checks a batch (and its caches) and returns each sequence's cached length and
    /// every token's position.
    fn positions(
        &self,
        batch: &PackedBatch,
        caches: Option<&[KvCache]>,
    ) -> Result<(Vec<usize>, Vec<u32>)> {
        let n_seqs = batch.num_seqs();
        if n_seqs == 0 {
            return Err(ModelError::Input("empty batch".into()));
        }
        let past: Vec<usize> = match caches {
            Some(c) if c.len() != n_seqs => {
                return Err(ModelError::Input(format!(
                    "{} caches for {n_seqs} sequences",
                    c.len()
                )))
            }
            Some(c) => c.iter().map(KvCache::len).collect(),
            None => vec![0; n_seqs],
        };
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
        Ok((past, positions))
    }

    /// Runs the packed batch for inference. With `caches`, sequence i continues
    /// `caches[i]` (its positions start at the cached length) and its new keys/values
    /// are appended.
    pub fn forward(
        &self,
        batch: &PackedBatch,
        caches: Option<&mut [KvCache]>,
        output: Output,
    ) -> Result<Tensor> {
        self.forward_t(batch, caches, output, Pass::Inference)
    }

    /// Runs the packed batch in `pass` (a training pass uses only ops with a backward).
    pub fn forward_t(
        &self,
        batch: &PackedBatch,
        mut caches: Option<&mut [KvCache]>,
        output: Output,
        pass: Pass,
    ) -> Result<Tensor> {
        let (past, positions) = self.positions(batch, caches.as_deref())?;
        let n_seqs = batch.num_seqs();
        let t = batch.num_tokens();
        let ids = Tensor::from_slice(&batch.tokens, t, &self.device)?;
        let pos = Tensor::from_vec(positions, t, &self.device)?;
        let (cos, sin) = self.rotary.tables(&pos)?;
        let flash = self.attention == AttentionPath::Flash && !pass.differentiable();
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
        let io = BlockInputs {
            pass,
            heads: (
                self.cfg.num_attention_heads,
                self.cfg.num_key_value_heads,
                self.cfg.head_dim,
            ),
            rope: (&cos, &sin),
            attention: AttentionOps {
                path: self.attention,
                pass,
                fused: self.fused_kernels,
            },
            fused_silu_mul: self.fused_ops(pass),
        };
        if let Some(store) = self.checkpointing.as_ref() {
            let trained =
                self.embed_tokens.track_op() || self.layers.iter().any(Layer::has_trainable);
            if pass.differentiable() && caches.is_none() && trained {
                let mut x = self.embed_tokens.index_select(&ids, 0)?;
                if !x.track_op() {
                    // Frozen embeddings: the layers' ops must still be in the graph.
                    x = Var::from_tensor(&x)?.as_tensor().clone();
                }
                for (li, layer) in self.layers.iter().enumerate() {
                    let run = LayerRun {
                        layer: layer.clone(),
                        li,
                        eps: self.cfg.rms_norm_eps as f32,
                        batch: batch.clone(),
                        runs: plan.runs.clone(),
                        rope: (cos.clone(), sin.clone()),
                        heads: io.heads,
                        attention: io.attention,
                        pass,
                    };
                    x = checkpointed(run, &x, store)?;
                }
                return self.head(&x, batch, output, pass);
            }
        }
        let first = self
            .layers
            .first()
            .ok_or_else(|| ModelError::Config("a decoder needs at least one layer".into()))?;
        let mut x = self.embed_tokens.index_select(&ids, 0)?;
        let mut h = self.rms_norm(&x, &first.input_layernorm, pass)?;
        // Only the last position of each sequence reaches the LM head: past the last
        // layer's attention (which writes every position's keys/values), its output
        // projection, MLP and the head run on those rows alone (a prefill's saving).
        let last_rows = match output {
            Output::LastLogits if !pass.differentiable() && t > n_seqs => {
                Some(self.last_positions(batch)?)
            }
            _ => None,
        };
        let n_layers = self.layers.len();
        for (li, layer) in self.layers.iter().enumerate() {
            let keep = last_rows.as_ref().filter(|_| li + 1 == n_layers);
            let attn = layer.attention(li, &h, &io, &mut plan, caches.as_deref_mut(), keep)?;
            if let Some(rows) = keep {
                x = x.index_select(rows, 0)?;
            }
            (x, h) = self.add_rms_norm(&x, &attn, &layer.post_attention_layernorm, pass)?;
            let mlp = layer.mlp(&h, &io)?;
            match self.layers.get(li + 1) {
                Some(next) => (x, h) = self.add_rms_norm(&x, &mlp, &next.input_layernorm, pass)?,
                None => x = (x + mlp)?,
            }
        }
        self.head(&x, batch, output, pass)
    }

    /// Row index of each sequence's last token in the packed batch.
    fn last_positions(&self, batch: &PackedBatch) -> Result<Tensor> {
        let last: Vec<u32> = batch.cu_seqlens[1..]
            .iter()
            .map(|&e| e as u32 - 1)
            .collect();
        Ok(Tensor::from_vec(last, batch.num_seqs(), &self.device)?)
    }

    /// The final norm and, for logits, the LM head (only at the positions asked for).
    fn head(&self, x: &Tensor, batch: &PackedBatch, output: Output, pass: Pass) -> Result<Tensor> {
        match output {
            Output::LastLogits => {
                // One row per sequence: the last layer kept only those rows, or every
                // sequence is one token long.
                let x = if x.dim(0)? == batch.num_seqs() {
                    x.clone()
                } else {
                    x.index_select(&self.last_positions(batch)?, 0)?
                };
                let h = self.rms_norm(&x, &self.norm, pass)?;
                Ok(self.lm_head.forward_t(&h, pass)?.to_dtype(DType::F32)?)
            }
            Output::AllLogits => {
                let h = self.rms_norm(x, &self.norm, pass)?;
                Ok(self.lm_head.forward_t(&h, pass)?.to_dtype(DType::F32)?)
            }
            Output::Hidden => self.rms_norm(x, &self.norm, pass),
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

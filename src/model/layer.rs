//! One transformer block and its two halves, each a forward of its own: attention
//! (projections, rotary, attention over the packed batch and its caches, output
//! projection) and the gated MLP.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use candle_core::Tensor;

use super::attention::{attend_layer, AttentionOps, BatchPlan};
use super::kv::KvCache;
use super::linear::Linear;
use super::ops::Pass;
use super::rope::Rotary;
use super::Result;

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

/// What one forward pass tells every block: the pass, the head layout, the rotary
/// tables of the batch's positions, and how attention and the MLP run.
pub(super) struct BlockInputs<'a> {
    pub pass: Pass,
    /// (query heads, key/value heads, head dim).
    pub heads: (usize, usize, usize),
    pub rope: (&'a Tensor, &'a Tensor),
    pub attention: AttentionOps,
    /// SiLU·up as one fused op (inference in a float dtype, any device).
    pub fused_silu_mul: bool,
}

impl Layer {
    /// The attention half of layer `li` on the normed input `h` (`[t, hidden]`); with
    /// `caches`, each sequence's new keys/values are appended to its cache. With
    /// `keep`, only those rows of the attention output go through the output projection
    /// (the rows the caller still needs).
    pub(super) fn attention(
        &self,
        li: usize,
        h: &Tensor,
        io: &BlockInputs,
        plan: &mut BatchPlan,
        caches: Option<&mut [KvCache]>,
        keep: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = h.dim(0)?;
        let (hq, hkv, hd) = io.heads;
        let (cos, sin) = io.rope;
        let q = self.q_proj.forward_t(h, io.pass)?.reshape((t, hq, hd))?;
        let k = self.k_proj.forward_t(h, io.pass)?.reshape((t, hkv, hd))?;
        let v = self.v_proj.forward_t(h, io.pass)?.reshape((t, hkv, hd))?;
        let q = Rotary::apply(&q, cos, sin, io.pass)?;
        let k = Rotary::apply(&k, cos, sin, io.pass)?;
        let attn = attend_layer(
            io.attention,
            li,
            (&q, &k, &v),
            self.sliding_window,
            plan,
            caches,
        )?;
        let attn = match keep {
            Some(rows) => attn.index_select(rows, 0)?,
            None => attn,
        };
        self.o_proj.forward_t(&attn, io.pass)
    }

    /// The MLP half on the normed input `h`: `down(silu(gate(h)) · up(h))`.
    pub(super) fn mlp(&self, h: &Tensor, io: &BlockInputs) -> Result<Tensor> {
        let gate = self.gate_proj.forward_t(h, io.pass)?;
        let up = self.up_proj.forward_t(h, io.pass)?;
        let inner = if io.pass.differentiable() {
            super::autograd::silu_mul(&gate, &up)?
        } else if io.fused_silu_mul {
            super::fused::silu_mul(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        self.down_proj.forward_t(&inner, io.pass)
    }

    /// The whole block on the residual stream `x` as a training pass computes it: norm,
    /// attention, residual add, norm, MLP, residual add (the unit that gradient
    /// checkpointing recomputes).
    pub(super) fn block(
        &self,
        li: usize,
        x: &Tensor,
        eps: f32,
        io: &BlockInputs,
        plan: &mut BatchPlan,
    ) -> Result<Tensor> {
        let h = super::autograd::rms_norm(x, &self.input_layernorm, eps)?;
        let x = (x + self.attention(li, &h, io, plan, None, None)?)?;
        let h = super::autograd::rms_norm(&x, &self.post_attention_layernorm, eps)?;
        Ok((&x + self.mlp(&h, io)?)?)
    }

    fn projections(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    /// Whether any weight or adapter of the block is trained (a variable or computed
    /// from one).
    pub fn has_trainable(&self) -> bool {
        let norms = [&self.input_layernorm, &self.post_attention_layernorm];
        norms.iter().any(|t| t.track_op()) || self.projections().iter().any(|p| p.has_trainable())
    }

    /// The LoRA dropout counter the block's adapters draw masks from, if any.
    pub(super) fn dropout_counter(&self) -> Option<Arc<AtomicU64>> {
        self.projections().iter().find_map(|p| {
            p.lora
                .as_ref()
                .and_then(|l| l.dropout.as_ref())
                .map(|d| d.counter.clone())
        })
    }

    /// The block's projections with their module paths inside the layer
    /// (`self_attn.q_proj`, ...), as PEFT names them.
    pub fn projections_named_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("self_attn.q_proj", &mut self.q_proj),
            ("self_attn.k_proj", &mut self.k_proj),
            ("self_attn.v_proj", &mut self.v_proj),
            ("self_attn.o_proj", &mut self.o_proj),
            ("mlp.gate_proj", &mut self.gate_proj),
            ("mlp.up_proj", &mut self.up_proj),
            ("mlp.down_proj", &mut self.down_proj),
        ]
    }

    /// The same block without LoRA adapters.
    pub fn without_adapters(&self) -> Self {
        let mut l = self.clone();
        for (_, p) in l.projections_named_mut() {
            p.lora = None;
        }
        l
    }
}

//! Gradient checkpointing (`gradient_checkpointing: true`): a training forward keeps
//! only each decoder layer's input; the backward recomputes the layer and takes its
//! vector-Jacobian product as the backward of `sum(layer(x) · upstream)` with `x` a
//! fresh variable.
//!
//! Each layer is one custom op on its input. Candle's backward asks that op only for
//! the input's gradient, so the gradients of the layer's weights (and adapters), which
//! the recomputation also yields, are added to a [`GradientCheckpointing`] store that
//! the trainer merges after `backward()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::attention::{AttentionOps, BatchPlan, Masks};
use super::autograd::custom::{attach_always, Backward1};
use super::batch::PackedBatch;
use super::layer::{BlockInputs, Layer};
use super::ops::Pass;
use super::Result;

/// Where the recomputed layers leave their weights' gradients until the trainer takes
/// them ([`Self::merge_into`]). Shared by the decoder and the trainer.
#[derive(Debug, Default)]
pub struct GradientCheckpointing {
    grads: Mutex<GradStore>,
}

impl GradientCheckpointing {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds the weight gradients gathered since the last call to `grads` (call once
    /// after each `backward()`).
    pub fn merge_into(&self, grads: &mut GradStore) -> candle_core::Result<()> {
        let taken = std::mem::take(&mut *self.lock()?);
        grads.extend(taken)
    }

    fn lock(&self) -> candle_core::Result<std::sync::MutexGuard<'_, GradStore>> {
        self.grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("checkpoint gradient store poisoned".into()))
    }
}

/// What one layer needs to run again in the backward (owned: the op outlives the
/// forward call).
pub(super) struct LayerRun {
    pub layer: Layer,
    pub li: usize,
    pub eps: f32,
    pub batch: PackedBatch,
    pub runs: Vec<(usize, usize)>,
    pub rope: (Tensor, Tensor),
    pub heads: (usize, usize, usize),
    pub attention: AttentionOps,
    pub pass: Pass,
}

impl LayerRun {
    fn run(&self, x: &Tensor) -> Result<Tensor> {
        let past = vec![0; self.batch.num_seqs()];
        let mut plan = BatchPlan {
            batch: &self.batch,
            past: &past,
            runs: self.runs.clone(),
            masks: Masks::new(x.dtype(), x.device()),
            flash: None,
        };
        let io = BlockInputs {
            pass: self.pass,
            heads: self.heads,
            rope: (&self.rope.0, &self.rope.1),
            attention: self.attention,
            fused_silu_mul: false,
        };
        self.layer.block(self.li, x, self.eps, &io, &mut plan)
    }
}

/// Runs the layer on `x` keeping nothing of its inside; its backward recomputes it.
/// `x` must take part in the graph (the caller makes the embeddings a variable when
/// they are frozen), or no gradient would reach the layer.
pub(super) fn checkpointed(
    run: LayerRun,
    x: &Tensor,
    store: &Arc<GradientCheckpointing>,
) -> Result<Tensor> {
    let counter = run.layer.dropout_counter();
    // The recomputation must draw the same dropout masks as this forward.
    let start = counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
    let y = run.run(&x.detach())?.detach();
    let op = Recompute {
        run,
        counter,
        start,
        store: store.clone(),
    };
    Ok(attach_always(x, y, op)?)
}

struct Recompute {
    run: LayerRun,
    counter: Option<Arc<AtomicU64>>,
    start: u64,
    store: Arc<GradientCheckpointing>,
}

impl Backward1 for Recompute {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }

    fn backward(
        &self,
        x: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let xv = Var::from_tensor(&x.detach())?;
        let resume = self
            .counter
            .as_ref()
            .map(|c| c.swap(self.start, Ordering::Relaxed));
        let out = self.run.run(xv.as_tensor());
        if let (Some(c), Some(v)) = (&self.counter, resume) {
            c.store(v, Ordering::Relaxed);
        }
        let out = out.map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut grads = (out * gy)?.sum_all()?.backward()?;
        let dx = grads.remove(xv.as_tensor()).map(|g| g.detach());
        let mut store = self.store.lock()?;
        let ids: Vec<_> = grads.get_ids().copied().collect();
        for id in ids {
            let Some(g) = grads.get_id(id) else { continue };
            // Detached: a weight gradient must not keep this recomputation's graph.
            let sum = match store.get_id(id) {
                Some(acc) => (acc + g)?.detach(),
                None => g.detach(),
            };
            store.insert_id(id, sum);
        }
        Ok(dx)
    }
}

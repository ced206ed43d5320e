//! Per-sequence key/value cache. Tensors are reference counted, so cloning a cache to
//! share a computed prefix between several continuations copies no data.

use candle_core::Tensor;

use super::Result;

/// Keys and values of one sequence for every layer, each `[len, kv_heads, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the keys and values held (a tensor shared with another cache counts in
    /// both: an upper bound on what dropping this cache frees).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[n, kv_heads, head_dim]`) to `layer` and returns the full
    /// keys and values. The length advances once the last layer has been appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let full = match &self.layers[layer] {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 0)?, Tensor::cat(&[pv, v], 0)?),
        };
        if layer + 1 == self.layers.len() {
            self.len = full.0.dims()[0];
        }
        self.layers[layer] = Some(full.clone());
        Ok(full)
    }

    /// Keeps only the first `len` positions (drops a speculative or judged suffix).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(0, 0, len)?;
            *v = v.narrow(0, 0, len)?;
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held by the cache tensors.
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

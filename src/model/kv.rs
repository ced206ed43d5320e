//! Per-sequence key/value cache. Tensors are reference counted, so cloning a cache to
//! share a computed prefix between several continuations copies no data.
//!
//! A cache told how long its sequence may grow ([`KvCache::reserve`], as a generation
//! is) keeps each layer in a buffer of that many positions and writes every new
//! token's keys/values in place: a decode step copies one position per layer instead
//! of the whole cache. A buffer is written in place only while no clone shares it; a
//! clone (a best-of-n's sequences start from one prompt) gets a buffer of its own on
//! its first append.

use std::sync::Arc;

use candle_core::Tensor;

use super::Result;

/// One layer: `k`, `v` are `[capacity, kv_heads, head_dim]`, the first `used` rows hold
/// the sequence.
#[derive(Debug, Clone)]
struct Layer {
    k: Tensor,
    v: Tensor,
    used: usize,
    /// The buffers were allocated here with room to grow (not views of a forward's
    /// output), and are ours to write while no clone holds this token.
    slab: Option<Arc<()>>,
}

impl Layer {
    fn capacity(&self) -> usize {
        self.k.dims()[0]
    }

    fn views(&self) -> Result<(Tensor, Tensor)> {
        if self.used == self.capacity() {
            return Ok((self.k.clone(), self.v.clone()));
        }
        Ok((
            self.k.narrow(0, 0, self.used)?,
            self.v.narrow(0, 0, self.used)?,
        ))
    }

    fn writable(&self, n: usize) -> bool {
        matches!(&self.slab, Some(t) if Arc::strong_count(t) == 1)
            && self.used + n <= self.capacity()
    }
}

/// Keys and values of one sequence for every layer, each `[len, kv_heads, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
    len: usize,
    /// Positions the sequence may reach (0: unknown, grow exactly).
    reserved: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
            reserved: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence will reach at most `positions`: the next append allocates buffers
    /// of that size, and appends after it write in place.
    pub fn reserve(&mut self, positions: usize) {
        self.reserved = positions;
    }

    /// Appends `k`, `v` (`[n, kv_heads, head_dim]`) to `layer` and returns the full
    /// keys and values. The length advances once the last layer has been appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dims()[0];
        let reserved = self.reserved;
        let entry = match self.layers[layer].take() {
            Some(mut l) if l.writable(n) => {
                l.k.slice_set(&k.contiguous()?, 0, l.used)?;
                l.v.slice_set(&v.contiguous()?, 0, l.used)?;
                l.used += n;
                l
            }
            Some(l) if reserved > l.used + n => {
                let (pk, pv) = l.views()?;
                Self::slab(&[&pk, k], &[&pv, v], reserved)?
            }
            Some(l) => {
                let (pk, pv) = l.views()?;
                let (k, v) = (Tensor::cat(&[&pk, k], 0)?, Tensor::cat(&[&pv, v], 0)?);
                Layer {
                    used: k.dims()[0],
                    k,
                    v,
                    slab: None,
                }
            }
            None if reserved > n => Self::slab(&[k], &[v], reserved)?,
            None => Layer {
                k: k.clone(),
                v: v.clone(),
                used: n,
                slab: None,
            },
        };
        let full = entry.views()?;
        self.layers[layer] = Some(entry);
        if layer + 1 == self.layers.len() {
            self.len = full.0.dims()[0];
        }
        Ok(full)
    }

    /// A layer buffer of `capacity` positions holding `ks`, `vs` one after the other.
    fn slab(ks: &[&Tensor], vs: &[&Tensor], capacity: usize) -> Result<Layer> {
        let fill = |parts: &[&Tensor]| -> Result<Tensor> {
            let (_, h, d) = parts[0].dims3()?;
            let buf = Tensor::zeros((capacity, h, d), parts[0].dtype(), parts[0].device())?;
            let mut at = 0;
            for p in parts {
                buf.slice_set(&p.contiguous()?, 0, at)?;
                at += p.dims()[0];
            }
            Ok(buf)
        };
        Ok(Layer {
            k: fill(ks)?,
            v: fill(vs)?,
            used: ks.iter().map(|p| p.dims()[0]).sum(),
            slab: Some(Arc::new(())),
        })
    }

    /// Keeps only the first `len` positions (drops a speculative or judged suffix).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for l in self.layers.iter_mut().flatten() {
            l.used = l.used.min(len);
            if l.slab.is_none() {
                // A view of exactly the kept rows, so the rest can be freed.
                l.k = l.k.narrow(0, 0, l.used)?;
                l.v = l.v.narrow(0, 0, l.used)?;
            }
        }
        self.len = len;
        Ok(())
    }

    /// Bytes held by the cache tensors (a buffer's whole capacity; a tensor shared with
    /// another cache counts in both: an upper bound on what dropping this cache frees).
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn rows(start: usize, n: usize) -> Tensor {
        Tensor::arange(start as f32, (start + n) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, 1, 1))
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_reserved_cache_grows_in_place_and_clones_never_see_each_other() {
        let mut a = KvCache::new(1);
        a.reserve(8);
        a.append(0, &rows(0, 3), &rows(0, 3)).unwrap();
        assert_eq!(
            a.size_in_bytes(),
            2 * 8 * 4,
            "one buffer of the reserved size"
        );
        let mut b = a.clone();
        // `a` is shared now: its append copies into a buffer of its own.
        let (k, _) = a.append(0, &rows(10, 1), &rows(10, 1)).unwrap();
        assert_eq!(values(&k), [0., 1., 2., 10.]);
        let (k, _) = b.append(0, &rows(20, 2), &rows(20, 2)).unwrap();
        assert_eq!(values(&k), [0., 1., 2., 20., 21.]);
        // Each owns its buffer now: later appends write in place, unseen by the other.
        let (k, v) = a.append(0, &rows(11, 1), &rows(11, 1)).unwrap();
        assert_eq!(values(&k), [0., 1., 2., 10., 11.]);
        assert_eq!(values(&v), values(&k));
        assert_eq!(
            values(&b.append(0, &rows(22, 1), &rows(22, 1)).unwrap().0),
            [0., 1., 2., 20., 21., 22.]
        );
        assert_eq!((a.len(), b.len()), (5, 6));
        // Truncated, then written in place over the dropped rows.
        a.truncate(3).unwrap();
        let (k, _) = a.append(0, &rows(30, 1), &rows(30, 1)).unwrap();
        assert_eq!(values(&k), [0., 1., 2., 30.]);
        assert_eq!(
            values(
                &b.layers[0]
                    .as_ref()
                    .unwrap()
                    .views()
                    .unwrap()
                    .0
                    .i(3..)
                    .unwrap()
            ),
            [20., 21., 22.]
        );
        // Past the reservation it still grows, exactly.
        for i in 0..6 {
            a.append(0, &rows(40 + i, 1), &rows(40 + i, 1)).unwrap();
        }
        assert_eq!(a.len(), 10);
        assert_eq!(a.size_in_bytes(), 2 * 10 * 4);
    }

    #[test]
    fn an_unreserved_cache_holds_exactly_its_rows() {
        let mut c = KvCache::new(2);
        for layer in 0..2 {
            c.append(layer, &rows(0, 4), &rows(0, 4)).unwrap();
        }
        for layer in 0..2 {
            c.append(layer, &rows(4, 2), &rows(4, 2)).unwrap();
        }
        assert_eq!((c.len(), c.size_in_bytes()), (6, 2 * 2 * 6 * 4));
        c.truncate(2).unwrap();
        assert_eq!((c.len(), c.size_in_bytes()), (2, 2 * 2 * 2 * 4));
    }
}

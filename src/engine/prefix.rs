//! Shared-prefix KV for judge prompts.
//!
//! Judge prompts repeat long token prefixes: every prompt of a context starts with the
//! same system message, template head and context; inside a tournament the same
//! response comes back in position A in later rounds. Working purely on token ids
//! (longest common token prefix, never on text, so tokenizer merges across a boundary
//! cannot make it wrong), [`PrefixScorer`]:
//! 1. finds prefixes shared by several prompts of a batch and computes each once;
//! 2. starts every prompt from the longest cached prefix it extends (keys/values of a
//!    cached sequence truncated to the common length);
//! 3. runs all remaining suffixes in one packed forward that attends to those caches;
//! 4. keeps the computed prompts in an LRU cache bounded in bytes for later batches.

use super::chunks::chunk_by_tokens;
use super::metrics::EngineMetrics;
use super::probs::ab_probs_rows;
use self_judge_judge::OrderProbs;
use self_judge_model::{Decoder, KvCache, ModelError, Output, PackedBatch};

/// Length of the longest common prefix.
pub fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The prefixes shared by at least two prompts, grouped by nesting depth (outermost
/// first). A prefix is kept when it is at least `min_shared` tokens longer than the
/// shared prefix enclosing it, and it always leaves one token of every prompt sharing it
/// (which must produce logits). Uses the LCP intervals of the sorted prompts.
pub fn shared_prefixes(prompts: &[&[u32]], min_shared: usize) -> Vec<Vec<Vec<u32>>> {
    let mut sorted: Vec<&[u32]> = prompts.to_vec();
    sorted.sort();
    // (shared length, first sorted index) of the open LCP intervals, outermost at the bottom.
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    let mut found: Vec<(usize, usize, usize)> = Vec::new(); // (len, lb, rb)
    let close = |len: usize, lb: usize, rb: usize, found: &mut Vec<(usize, usize, usize)>| {
        if len > 0 {
            found.push((len, lb, rb));
        }
    };
    for i in 0..sorted.len().saturating_sub(1) {
        let l = lcp(sorted[i], sorted[i + 1]);
        let mut lb = i;
        while l < stack.last().expect("bottom").0 {
            let (len, b) = stack.pop().expect("non-empty");
            close(len, b, i, &mut found);
            lb = b;
        }
        if l > stack.last().expect("bottom").0 {
            stack.push((l, lb));
        }
    }
    let last = sorted.len().saturating_sub(1);
    while let Some((len, b)) = stack.pop() {
        close(len, b, last, &mut found);
    }
    // Cap each interval so every member keeps a token, then keep the useful ones,
    // outermost (shortest) first so each can continue its parent's cache.
    let mut kept: Vec<(usize, usize, usize)> = found
        .into_iter()
        .map(|(len, lb, rb)| {
            let shortest = sorted[lb..=rb].iter().map(|p| p.len()).min().unwrap_or(0);
            (len.min(shortest.saturating_sub(1)), lb, rb)
        })
        .collect();
    kept.sort();
    kept.dedup_by(|a, b| a.0 == b.0 && sorted[a.1][..a.0] == sorted[b.1][..b.0]);
    let mut levels: Vec<Vec<Vec<u32>>> = Vec::new();
    // (len, lb, rb, depth) of the kept intervals, to find each one's parent.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (len, lb, rb) in kept {
        let parent = placed
            .iter()
            .filter(|&&(pl, plb, prb, _)| plb <= lb && rb <= prb && pl < len)
            .max_by_key(|p| p.0)
            .copied();
        let (parent_len, depth) = parent.map_or((0, 0), |p| (p.0, p.3 + 1));
        if len < min_shared || len < parent_len + min_shared {
            continue;
        }
        if levels.len() <= depth {
            levels.resize(depth + 1, Vec::new());
        }
        levels[depth].push(sorted[lb][..len].to_vec());
        placed.push((len, lb, rb, depth));
    }
    levels
}

struct Entry {
    tokens: Vec<u32>,
    kv: KvCache,
    bytes: usize,
    used: u64,
}

/// Cached key/value sequences, least recently used evicted first.
pub struct PrefixCache {
    entries: Vec<Entry>,
    bytes: usize,
    max_bytes: usize,
    clock: u64,
}

impl PrefixCache {
    /// An empty cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            max_bytes,
            clock: 0,
        }
    }

    /// Bytes held.
    pub fn size_in_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of cached sequences.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest cached prefix of `tokens`, at most `max_len` long and at least
    /// `min_len`: its length and its keys/values (truncated, sharing storage).
    pub fn lookup(
        &mut self,
        tokens: &[u32],
        max_len: usize,
        min_len: usize,
    ) -> Option<(usize, KvCache)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let l = lcp(&e.tokens, tokens).min(max_len).min(e.kv.len());
            if l >= min_len.max(1) && best.is_none_or(|(_, bl)| l > bl) {
                best = Some((i, l));
            }
        }
        let (i, l) = best?;
        self.clock += 1;
        let e = &mut self.entries[i];
        e.used = self.clock;
        let mut kv = e.kv.clone();
        kv.truncate(l).ok()?;
        Some((l, kv))
    }

    /// Caches `kv` for `tokens` (replacing an entry it extends), evicting the least
    /// recently used entries to stay within the byte budget.
    pub fn insert(&mut self, tokens: Vec<u32>, kv: KvCache) {
        let bytes = kv.size_in_bytes();
        if bytes > self.max_bytes || kv.len() != tokens.len() {
            return;
        }
        // An entry that is a prefix of the new one adds nothing once this is cached.
        let mut freed = 0;
        self.entries.retain(|e| {
            let redundant = e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens);
            if redundant {
                freed += e.bytes;
            }
            !redundant
        });
        self.bytes -= freed;
        if self.entries.iter().any(|e| e.tokens.starts_with(&tokens)) {
            return;
        }
        while self.bytes + bytes > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.bytes -= self.entries.swap_remove(oldest).bytes;
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens,
            kv,
            bytes,
            used: self.clock,
        });
    }
}

/// What one scoring call computed, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefillStats {
    /// Tokens run through the model.
    pub computed: usize,
    /// Prompt tokens taken from cached keys/values instead.
    pub reused: usize,
    /// Prompts that started from a cached prefix.
    pub hits: usize,
}

/// Scores judge prompts with shared prefixes computed once.
pub struct PrefixScorer {
    pub cache: PrefixCache,
    pub token_ids: (u32, u32),
    pub max_batch_tokens: usize,
    /// Shorter shared prefixes are not worth a separate pass.
    pub min_shared: usize,
    /// Totals since creation.
    pub stats: PrefillStats,
}

impl PrefixScorer {
    /// A scorer with a cache of `cache_bytes`.
    pub fn new(token_ids: (u32, u32), max_batch_tokens: usize, cache_bytes: usize) -> Self {
        Self {
            cache: PrefixCache::new(cache_bytes),
            token_ids,
            max_batch_tokens,
            min_shared: 16,
            stats: PrefillStats::default(),
        }
    }

    /// Runs `seqs` (each continuing its cache) in packed forwards within the token
    /// budget; returns P(A), P(B) at each last position when `logits`, and leaves the
    /// caches extended.
    fn run(
        &mut self,
        dec: &Decoder,
        seqs: &[&[u32]],
        caches: &mut [KvCache],
        logits: bool,
    ) -> Result<Vec<OrderProbs>, ModelError> {
        let mut out = Vec::new();
        for r in chunk_by_tokens(seqs, self.max_batch_tokens) {
            let batch = PackedBatch::new(&seqs[r.clone()])?;
            self.stats.computed += batch.num_tokens();
            let kind = if logits {
                Output::LastLogits
            } else {
                Output::Hidden
            };
            let t = dec.forward(&batch, Some(&mut caches[r]), kind)?;
            if logits {
                out.extend(ab_probs_rows(&t, self.token_ids.0, self.token_ids.1)?);
            }
        }
        Ok(out)
    }

    /// Computes, once, every prefix of at least `min_shared` tokens that several
    /// prompts share and the cache does not already cover. Shared prefixes nest (the
    /// template head is shared by every prompt, the head plus a context by the prompts of
    /// that context, ...): each level is one packed pass continuing the level above.
    fn share_prefixes(&mut self, dec: &Decoder, prompts: &[&[u32]]) -> Result<(), ModelError> {
        let levels = shared_prefixes(prompts, self.min_shared);
        for level in levels {
            // (full prefix, tokens already cached) for every prefix still to compute.
            let mut todo: Vec<(Vec<u32>, usize)> = Vec::new();
            let mut caches = Vec::new();
            for s in level {
                let (start, kv) = match self.cache.lookup(&s, s.len(), self.min_shared) {
                    Some((l, _)) if l == s.len() => continue,
                    Some((l, kv)) => (l, kv),
                    None => (0, KvCache::new(dec.cfg.num_hidden_layers)),
                };
                self.stats.reused += start;
                caches.push(kv);
                todo.push((s, start));
            }
            if todo.is_empty() {
                continue;
            }
            let suffixes: Vec<&[u32]> = todo.iter().map(|(s, start)| &s[*start..]).collect();
            self.run(dec, &suffixes, &mut caches, false)?;
            for ((full, _), kv) in todo.into_iter().zip(caches) {
                self.cache.insert(full, kv);
            }
        }
        Ok(())
    }

    /// P(A), P(B) at the end of every prompt.
    pub fn score(
        &mut self,
        dec: &Decoder,
        prompts: &[&[u32]],
        metrics: Option<&EngineMetrics>,
    ) -> Result<Vec<OrderProbs>, ModelError> {
        let before = self.stats;
        self.share_prefixes(dec, prompts)?;
        let mut caches = Vec::with_capacity(prompts.len());
        let mut suffixes = Vec::with_capacity(prompts.len());
        for p in prompts {
            match self.cache.lookup(p, p.len() - 1, self.min_shared) {
                Some((l, kv)) => {
                    self.stats.reused += l;
                    self.stats.hits += 1;
                    caches.push(kv);
                    suffixes.push(&p[l..]);
                }
                None => {
                    caches.push(KvCache::new(dec.cfg.num_hidden_layers));
                    suffixes.push(&p[..]);
                }
            }
        }
        let probs = self.run(dec, &suffixes, &mut caches, true)?;
        for (p, kv) in prompts.iter().zip(caches) {
            self.cache.insert(p.to_vec(), kv);
        }
        if let Some(m) = metrics {
            m.prefill_tokens
                .inc_by((self.stats.computed - before.computed) as u64);
            m.prefix_tokens_saved
                .inc_by((self.stats.reused - before.reused) as u64);
            m.prefix_hits.inc_by((self.stats.hits - before.hits) as u64);
        }
        Ok(probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys/values of `n` positions: 16 bytes each (one layer, one head of 2 f32).
    fn kv(n: usize) -> KvCache {
        let mut c = KvCache::new(1);
        let z = candle_core::Tensor::zeros(
            (n, 1, 2),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        c.append(0, &z, &z).unwrap();
        c
    }

    fn seq(start: u32, n: u32) -> Vec<u32> {
        (start..start + n).collect()
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_within_the_budget() {
        let mut c = PrefixCache::new(30 * 16);
        c.insert(seq(0, 10), kv(10));
        c.insert(seq(100, 10), kv(10));
        assert!(
            c.lookup(&seq(0, 12), 12, 1).is_some(),
            "A is used: now the most recent"
        );
        c.insert(seq(200, 10), kv(10));
        assert_eq!(
            (c.len(), c.size_in_bytes()),
            (3, 30 * 16),
            "exactly at the budget"
        );
        c.insert(seq(300, 10), kv(10));
        assert_eq!(c.len(), 3);
        assert!(c.size_in_bytes() <= 30 * 16);
        assert!(
            c.lookup(&seq(100, 10), 10, 1).is_none(),
            "B was the least recently used"
        );
        for start in [0, 200, 300] {
            let (len, kv) = c.lookup(&seq(start, 10), 10, 1).expect("kept");
            assert_eq!((len, kv.len()), (10, 10));
        }
        // Over the whole budget: not cached, nothing evicted for it.
        c.insert(seq(400, 31), kv(31));
        assert_eq!(c.len(), 3);
        assert!(c.lookup(&seq(400, 31), 31, 1).is_none());
        // An entry that extends a cached one replaces it (its bytes freed first); the
        // rest still does not fit, so the least recently used of the others (C: the
        // lookups above went A, C, D) goes.
        c.insert(seq(0, 12), kv(12));
        assert_eq!((c.len(), c.size_in_bytes()), (2, 22 * 16));
        assert_eq!(c.lookup(&seq(0, 12), 12, 1).map(|(l, _)| l), Some(12));
        assert!(c.lookup(&seq(200, 10), 10, 1).is_none());
        assert!(c.lookup(&seq(300, 10), 10, 1).is_some());
        // A prefix of a cached entry adds nothing.
        c.insert(seq(300, 5), kv(5));
        assert_eq!((c.len(), c.size_in_bytes()), (2, 22 * 16));
        // Lookups respect the bounds asked for.
        assert_eq!(
            c.lookup(&seq(0, 12), 7, 1).map(|(l, kv)| (l, kv.len())),
            Some((7, 7))
        );
        assert!(
            c.lookup(&seq(0, 3), 12, 4).is_none(),
            "shorter than min_len"
        );
    }

    #[test]
    fn nested_prefixes_come_out_by_level() {
        let head: Vec<u32> = (0..20).collect();
        let mk = |ctx: u32, tail: &[u32]| -> Vec<u32> {
            let mut v = head.clone();
            v.extend(std::iter::repeat_n(100 + ctx, 20));
            v.extend_from_slice(tail);
            v
        };
        let prompts = [
            mk(1, &[7, 8]),
            mk(1, &[9]),
            mk(2, &[7]),
            mk(2, &[5, 5]),
            mk(3, &[1]),
        ];
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let levels = shared_prefixes(&refs, 16);
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0], vec![head.clone()]);
        let mut inner: Vec<usize> = levels[1].iter().map(Vec::len).collect();
        inner.sort();
        assert_eq!(inner, vec![40, 40]);
        assert!(levels[1].iter().all(|p| p.starts_with(&head)));
    }

    #[test]
    fn a_prompt_always_keeps_one_token() {
        let a: Vec<u32> = (0..30).collect();
        let b: Vec<u32> = (0..40).collect();
        let levels = shared_prefixes(&[&a, &b], 16);
        assert_eq!(levels, vec![vec![a[..29].to_vec()]]);
    }
}

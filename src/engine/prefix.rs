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

use super::metrics::EngineMetrics;
use super::scorer::{ab_probs, chunk_by_tokens};
use crate::judge::OrderProbs;
use crate::model::{Decoder, KvCache, ModelError, Output, PackedBatch};

/// Length of the longest common prefix.
pub fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
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
    /// budget; returns last-position logits when `logits`, and leaves the caches
    /// extended.
    fn run(
        &mut self,
        dec: &Decoder,
        seqs: &[&[u32]],
        caches: &mut [KvCache],
        logits: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
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
                out.extend(t.to_vec2::<f32>()?);
            }
        }
        Ok(out)
    }

    /// Computes, once, every prefix of at least `min_shared` tokens that several
    /// prompts share and the cache does not already cover.
    fn share_prefixes(&mut self, dec: &Decoder, prompts: &[&[u32]]) -> Result<(), ModelError> {
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by(|&a, &b| prompts[a].cmp(prompts[b]));
        let mut shared: Vec<Vec<u32>> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            // A run of sorted prompts whose neighbours share >= min_shared tokens.
            let mut len = usize::MAX;
            let mut j = i + 1;
            while j < order.len() {
                let l = lcp(prompts[order[j - 1]], prompts[order[j]]);
                if l < self.min_shared {
                    break;
                }
                len = len.min(l);
                j += 1;
            }
            if j - i >= 2 {
                // Leave at least one token of every prompt to produce its logits.
                let shortest = order[i..j]
                    .iter()
                    .map(|&k| prompts[k].len())
                    .min()
                    .unwrap_or(0);
                let len = len.min(shortest.saturating_sub(1));
                if len >= self.min_shared {
                    shared.push(prompts[order[i]][..len].to_vec());
                }
            }
            i = j;
        }
        // (full prefix, tokens already cached) for every prefix still to compute.
        let mut todo: Vec<(Vec<u32>, usize)> = Vec::new();
        let mut caches = Vec::new();
        for s in shared {
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
            return Ok(());
        }
        let suffixes: Vec<&[u32]> = todo.iter().map(|(s, start)| &s[*start..]).collect();
        self.run(dec, &suffixes, &mut caches, false)?;
        for ((full, _), kv) in todo.into_iter().zip(caches) {
            self.cache.insert(full, kv);
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
        let logits = self.run(dec, &suffixes, &mut caches, true)?;
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
        Ok(logits
            .iter()
            .map(|l| ab_probs(l, self.token_ids.0, self.token_ids.1))
            .collect())
    }
}

//! The resumable position of a training run: the data order (reshuffled per pass from the
//! seed and the pass number, so no generator state needs saving), the step, the logging
//! window and the log history. Saved with every checkpoint as `training_progress.json`.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything besides weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Passes over the data started (the current pass's index).
    pub pass: usize,
    /// Examples of the current pass consumed.
    pub cursor: usize,
    /// Tokens processed (for tokens/s).
    pub tokens: usize,
    /// Sums of the metrics logged since the last log entry, and how many steps they hold.
    pub window: BTreeMap<String, f64>,
    pub window_steps: usize,
    /// LoRA dropout masks drawn (the counter of the seeded mask generator).
    pub dropout_counter: u64,
    /// HF Trainer's `log_history` entries so far.
    pub log_history: Vec<Value>,
}

impl Progress {
    /// Adds one step's metrics to the logging window.
    pub fn accumulate(&mut self, metrics: &[(&str, f64)]) {
        for (k, v) in metrics {
            *self.window.entry(k.to_string()).or_default() += v;
        }
        self.window_steps += 1;
    }

    /// Means of the window's metrics; empties the window.
    pub fn take_window(&mut self) -> BTreeMap<String, f64> {
        let n = self.window_steps.max(1) as f64;
        let out = std::mem::take(&mut self.window)
            .into_iter()
            .map(|(k, v)| (k, v / n))
            .collect();
        self.window_steps = 0;
        out
    }
}

/// Draws example indices pass after pass, each pass a fresh shuffle of `0..n` (of
/// groups of `group` consecutive indices, which stay together and in order).
pub struct Sampler {
    n: usize,
    seed: u64,
    group: usize,
    order: Option<Vec<usize>>,
}

impl Sampler {
    /// A sampler over `n` examples.
    pub fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            group: 1,
            order: None,
        }
    }

    /// A sampler that shuffles groups of `group` consecutive examples (`n` must be a
    /// multiple of it): both orders of one judgment land in the same micro-batch.
    pub fn grouped(n: usize, seed: u64, group: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            group > 0 && n.is_multiple_of(group),
            "{n} examples do not split into groups of {group}"
        );
        Ok(Self {
            group,
            ..Self::new(n, seed)
        })
    }

    /// Number of examples it draws from.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The shuffled order of pass `pass`.
    pub fn pass_order(&self, pass: usize) -> Vec<usize> {
        let mut groups: Vec<usize> = (0..self.n / self.group).collect();
        let mix = (pass as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        groups.shuffle(&mut StdRng::seed_from_u64(self.seed ^ mix));
        let g = self.group;
        groups
            .into_iter()
            .flat_map(|k| k * g..(k + 1) * g)
            .collect()
    }

    /// The next index, advancing `progress.pass`/`progress.cursor`.
    pub fn next(&mut self, progress: &mut Progress) -> usize {
        if progress.cursor >= self.n {
            progress.pass += 1;
            progress.cursor = 0;
            self.order = None;
        }
        if self.order.is_none() {
            self.order = Some(self.pass_order(progress.pass));
        }
        let order = self.order.as_ref().expect("set above");
        let i = order[progress.cursor];
        progress.cursor += 1;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_mid_pass_continues_the_same_order() {
        let mut full = Sampler::new(7, 3);
        let mut p = Progress::default();
        let all: Vec<usize> = (0..20).map(|_| full.next(&mut p)).collect();
        let mut first = Sampler::new(7, 3);
        let mut q = Progress::default();
        let mut got: Vec<usize> = (0..9).map(|_| first.next(&mut q)).collect();
        let mut resumed = Sampler::new(7, 3);
        got.extend((0..11).map(|_| resumed.next(&mut q)));
        assert_eq!(all, got);
        assert_eq!(p, q);
        // Each pass is a permutation, and passes differ.
        let mut pass0 = all[..7].to_vec();
        pass0.sort();
        assert_eq!(pass0, (0..7).collect::<Vec<_>>());
        assert_ne!(all[..7], all[7..14]);
    }

    #[test]
    fn grouped_sampling_keeps_pairs_together_in_order() {
        let mut s = Sampler::grouped(10, 5, 2).unwrap();
        let mut p = Progress::default();
        let all: Vec<usize> = (0..20).map(|_| s.next(&mut p)).collect();
        for pair in all.chunks(2) {
            assert!(pair[0] % 2 == 0 && pair[1] == pair[0] + 1, "{all:?}");
        }
        let mut pass0 = all[..10].to_vec();
        pass0.sort();
        assert_eq!(pass0, (0..10).collect::<Vec<_>>());
        assert_ne!(all[..10], all[10..]);
        assert_ne!(all[..10], (0..10).collect::<Vec<_>>(), "shuffled");
        assert!(Sampler::grouped(9, 5, 2).is_err());
    }
}

//! A packed variable-length batch: several token sequences concatenated, with
//! cumulative lengths marking where each starts (as TEI's `cu_seq_lengths`). No
//! padding is ever materialised.

use super::{ModelError, Result};

/// Sequences packed end to end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedBatch {
    /// All new tokens, sequence after sequence.
    pub tokens: Vec<u32>,
    /// `cu_seqlens[i]..cu_seqlens[i+1]` are sequence i's tokens; starts with 0.
    pub cu_seqlens: Vec<usize>,
}

impl PackedBatch {
    /// Packs the given sequences. An empty sequence is refused: it has no last position.
    pub fn new<S: AsRef<[u32]>>(seqs: &[S]) -> Result<Self> {
        let mut b = PackedBatch {
            tokens: Vec::with_capacity(seqs.iter().map(|s| s.as_ref().len()).sum()),
            cu_seqlens: Vec::with_capacity(seqs.len() + 1),
        };
        b.cu_seqlens.push(0);
        for (i, s) in seqs.iter().enumerate() {
            b.push(s.as_ref())
                .map_err(|_| ModelError::Input(format!("sequence {i} is empty")))?;
        }
        Ok(b)
    }

    /// Appends one non-empty sequence.
    pub fn push(&mut self, seq: &[u32]) -> Result<()> {
        if seq.is_empty() {
            return Err(ModelError::Input("empty sequence".into()));
        }
        if self.cu_seqlens.is_empty() {
            self.cu_seqlens.push(0);
        }
        self.tokens.extend_from_slice(seq);
        self.cu_seqlens.push(self.tokens.len());
        Ok(())
    }

    /// Number of sequences.
    pub fn num_seqs(&self) -> usize {
        self.cu_seqlens.len().saturating_sub(1)
    }

    /// Total number of tokens.
    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Length of sequence `i`.
    pub fn seq_len(&self, i: usize) -> usize {
        self.cu_seqlens[i + 1] - self.cu_seqlens[i]
    }

    /// Tokens of sequence `i`.
    pub fn seq(&self, i: usize) -> &[u32] {
        &self.tokens[self.cu_seqlens[i]..self.cu_seqlens[i + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_indexes() {
        let b = PackedBatch::new(&[vec![1u32, 2, 3], vec![4], vec![5, 6]]).unwrap();
        assert_eq!(b.cu_seqlens, vec![0, 3, 4, 6]);
        assert_eq!(b.num_seqs(), 3);
        assert_eq!(b.seq(2), &[5, 6]);
        assert_eq!(b.seq_len(1), 1);
    }

    #[test]
    fn refuses_empty_sequence() {
        let e = PackedBatch::new(&[vec![1u32], vec![]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sequence 1 is empty"), "{e}");
    }
}

//! Causal language-model loss on packed sequences with masked labels, and per-sequence
//! log-probabilities (for DPO).

use candle_core::{Tensor, D};
use self_judge_model::{Decoder, Output, PackedBatch, Pass};

/// Label value that is not learned (HF's ignore index).
pub const IGNORE: i64 = -100;

/// One training sequence: tokens and, per token, the label (`IGNORE` or the token id
/// itself for learned positions). As in HF, position t predicts label t+1.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Example {
    /// Number of learned positions.
    pub fn num_targets(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
    }
}

/// Sum of the token log-likelihoods of every learned label of each sequence, as a
/// `[n_seqs]` tensor (differentiable), plus the number of targets per sequence. Only the
/// positions that predict a label go through the LM head. `pass` is a training pass
/// (with or without LoRA dropout).
pub fn sequence_logps(
    dec: &Decoder,
    examples: &[&Example],
    pass: Pass,
) -> anyhow::Result<(Tensor, Vec<usize>)> {
    let (sums, counts, _) = sequence_stats(dec, examples, pass)?;
    Ok((sums, counts))
}

/// [`sequence_logps`] plus, per sequence, the mean of the LM-head logits over its
/// learned positions (a detached diagnostic, logged as `logits/...`).
pub fn sequence_stats(
    dec: &Decoder,
    examples: &[&Example],
    pass: Pass,
) -> anyhow::Result<(Tensor, Vec<usize>, Vec<f32>)> {
    let seqs: Vec<&[u32]> = examples.iter().map(|e| e.input_ids.as_slice()).collect();
    let batch = PackedBatch::new(&seqs)?;
    let hidden = dec.forward_t(&batch, None, Output::Hidden, pass)?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut owner = Vec::new();
    let mut counts = vec![0usize; examples.len()];
    for (i, e) in examples.iter().enumerate() {
        anyhow::ensure!(
            e.labels.len() == e.input_ids.len(),
            "labels and input_ids differ in length"
        );
        let start = batch.cu_seqlens[i];
        for t in 0..e.input_ids.len().saturating_sub(1) {
            let l = e.labels[t + 1];
            if l != IGNORE {
                rows.push((start + t) as u32);
                targets.push(l as u32);
                owner.push(i as u32);
                counts[i] += 1;
            }
        }
    }
    let dev = dec.device();
    if rows.is_empty() {
        return Ok((
            Tensor::zeros(examples.len(), candle_core::DType::F32, dev)?,
            counts,
            vec![0.0; examples.len()],
        ));
    }
    let n = rows.len();
    let h = hidden.index_select(&Tensor::from_vec(rows, n, dev)?, 0)?;
    let logits = dec
        .lm_head
        .forward_t(&h, pass)?
        .to_dtype(candle_core::DType::F32)?;
    // The log-softmax is never materialised: its backward is recomputed from the logits.
    let picked = self_judge_model::autograd::target_log_probs(&logits, &targets)?;
    // Sum per sequence: a [n_seqs, n] one-hot ownership matrix times the picked values.
    let mut own = vec![0f32; examples.len() * n];
    for (j, &o) in owner.iter().enumerate() {
        own[o as usize * n + j] = 1.0;
    }
    let own = Tensor::from_vec(own, (examples.len(), n), dev)?;
    let sums = own.matmul(&picked.unsqueeze(1)?)?.squeeze(1)?;
    let row_means: Vec<f32> = logits.detach().mean(D::Minus1)?.to_vec1()?;
    let mut logit_means = vec![0f32; examples.len()];
    for (&o, m) in owner.iter().zip(&row_means) {
        logit_means[o as usize] += m / counts[o as usize] as f32;
    }
    Ok((sums, counts, logit_means))
}

/// Mean negative log-likelihood over `denominator` targets (the number of targets in
/// the whole accumulated batch, so micro-batches add up to the HF loss).
pub fn lm_loss(
    dec: &Decoder,
    examples: &[&Example],
    denominator: usize,
    pass: Pass,
) -> anyhow::Result<Tensor> {
    let (sums, _) = sequence_logps(dec, examples, pass)?;
    Ok((sums.sum_all()? * (-1.0 / denominator.max(1) as f64))?)
}

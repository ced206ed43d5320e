//! The DPO step of self-judge training on judged (chosen, rejected) pairs.

use candle_core::Tensor;

use super::loss::{dpo_terms, BatchStats};
use super::onpolicy::OnPolicy;
use crate::loss::{sequence_stats, Example};
use self_judge_model::Pass;

/// The DPO loss of (chosen, rejected) sequence pairs: returns the SUM of the per-pair
/// losses (differentiable) and the batch's statistics. `dropout`: the policy's pass
/// applies LoRA dropout (a training step; never for evaluation or the reference).
pub fn dpo_batch(
    op: &OnPolicy,
    chosen: &[Example],
    rejected: &[Example],
    dropout: bool,
) -> anyhow::Result<(Tensor, BatchStats)> {
    let args = &op.args;
    let n = chosen.len();
    let all: Vec<&Example> = chosen.iter().chain(rejected).collect();
    // The reference first, detached at once: a frozen full-fine-tuning copy holds
    // variables, and its graph must not be alive next to the policy's.
    let (reference, _, reference_logits) = sequence_stats(op.reference(), &all, Pass::TRAIN)?;
    let reference = reference.detach();
    let (policy, counts, policy_logits) =
        sequence_stats(&op.model.decoder, &all, Pass::Train { dropout })?;
    let (policy, reference) = if args.average_log_prob {
        let c: Vec<f32> = counts.iter().map(|&c| 1.0 / c.max(1) as f32).collect();
        let c = Tensor::from_vec(c, 2 * n, policy.device())?;
        ((policy * &c)?, (reference * &c)?)
    } else {
        (policy, reference)
    };
    let reference = reference.detach();
    let terms = dpo_terms(
        &policy.narrow(0, 0, n)?,
        &policy.narrow(0, n, n)?,
        &reference.narrow(0, 0, n)?,
        &reference.narrow(0, n, n)?,
        args.beta,
        args.loss_type,
    )?;
    let sum = terms.losses.sum_all()?;
    let pv: Vec<f32> = policy.detach().to_vec1()?;
    let rv: Vec<f32> = reference.to_vec1()?;
    let lens: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
    let stats = BatchStats {
        loss: sum.to_scalar::<f32>()? as f64 / n.max(1) as f64,
        terms: (terms.chosen_rewards, terms.rejected_rewards),
        logps: [
            pv[..n].to_vec(),
            pv[n..].to_vec(),
            rv[..n].to_vec(),
            rv[n..].to_vec(),
        ],
        logits: [
            policy_logits[..n].to_vec(),
            policy_logits[n..].to_vec(),
            reference_logits[..n].to_vec(),
            reference_logits[n..].to_vec(),
        ],
        lengths: (lens[..n].to_vec(), lens[n..].to_vec()),
    };
    Ok((sum, stats))
}

/// Concatenates the statistics of several micro-batches (the loss weighted by size).
pub fn merge_stats(parts: Vec<BatchStats>) -> BatchStats {
    let total: usize = parts.iter().map(|p| p.terms.0.len()).sum();
    let mut out = BatchStats::default();
    for p in parts {
        out.loss += p.loss * p.terms.0.len() as f64 / total.max(1) as f64;
        out.terms.0.extend(p.terms.0);
        out.terms.1.extend(p.terms.1);
        for (o, v) in out.logps.iter_mut().zip(p.logps) {
            o.extend(v);
        }
        for (o, v) in out.logits.iter_mut().zip(p.logits) {
            o.extend(v);
        }
        out.lengths.0.extend(p.lengths.0);
        out.lengths.1.extend(p.lengths.1);
    }
    out
}

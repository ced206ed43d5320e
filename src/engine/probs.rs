//! P(` A`) and P(` B`) from last-position logits: the softmax over the whole vocabulary.

use candle_core::{DType, Tensor};

use self_judge_judge::OrderProbs;
use self_judge_model::ModelError;

/// P(`token_a`) and P(`token_b`) under the softmax of `logits` (f64 accumulation).
pub fn ab_probs(logits: &[f32], token_a: u32, token_b: u32) -> OrderProbs {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let p = |t: u32| (logits[t as usize] as f64 - max).exp() / z;
    OrderProbs {
        p_a: p(token_a),
        p_b: p(token_b),
    }
}

/// P(`token_a`), P(`token_b`) for every row of `[n, vocab]` last-position logits. On
/// the CPU each row comes to the host and [`ab_probs`] takes the softmax in f64; on an
/// accelerator the softmax runs there in f32 and only the two columns come back.
pub fn ab_probs_rows(
    logits: &Tensor,
    token_a: u32,
    token_b: u32,
) -> Result<Vec<OrderProbs>, ModelError> {
    if logits.device().is_cpu() {
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        return Ok(rows.iter().map(|l| ab_probs(l, token_a, token_b)).collect());
    }
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let ids = Tensor::new(&[token_a, token_b], logits.device())?;
    let ab: Vec<Vec<f32>> = probs.index_select(&ids, 1)?.to_vec2()?;
    Ok(ab
        .iter()
        .map(|r| OrderProbs {
            p_a: f64::from(r[0]),
            p_b: f64::from(r[1]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_a_softmax() {
        let p = ab_probs(&[0.0, (2f32).ln(), 0.0, 0.0], 1, 2);
        assert!((p.p_a - 0.4).abs() < 1e-7 && (p.p_b - 0.2).abs() < 1e-7);
    }
}

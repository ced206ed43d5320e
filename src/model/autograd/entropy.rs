//! The log-probability of each row's target token, `log_softmax(logits)[target]`, with a
//! backward: the graph keeps the logits only (not their log-softmax), and the backward
//! recovers each row's log-sum-exp from the output (`lse = logit[target] - out`).

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use super::custom::{attach1, cpu_f32, Backward1};

/// `[n]` log-probabilities of `targets` under `[n, vocab]` f32 logits.
pub fn target_log_probs(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    if targets.len() != n {
        candle_core::bail!("{} targets for {n} rows", targets.len());
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("target {bad} is outside the vocabulary of {vocab}");
    }
    let idx = Tensor::from_slice(targets, (n, 1), logits.device())?;
    let x = logits.detach().to_dtype(DType::F32)?.contiguous()?;
    let y = match cpu_f32(&x)? {
        Some(v) => Tensor::from_vec(log_probs_cpu(&v, vocab, targets), n, x.device())?,
        None => {
            let lse = log_sum_exp(&x)?;
            (x.gather(&idx, 1)?.squeeze(1)? - lse)?
        }
    };
    attach1(logits, y, TargetBwd { idx })
}

/// Row-wise `log(sum(exp(x)))`, `[n]`.
fn log_sum_exp(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    (x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(1)
}

fn log_probs_cpu(x: &[f32], vocab: usize, targets: &[u32]) -> Vec<f32> {
    x.par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
            row[t as usize] - m - z.ln()
        })
        .collect()
}

struct TargetBwd {
    /// `[n, 1]` target ids.
    idx: Tensor,
}

impl Backward1 for TargetBwd {
    fn name(&self) -> &'static str {
        "target-log-probs"
    }

    fn backward(
        &self,
        logits: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let x = logits.to_dtype(DType::F32)?.contiguous()?;
        let (y, gy) = (&y.contiguous()?, &gy.contiguous()?);
        let dx = match (cpu_f32(&x)?, cpu_f32(y)?, cpu_f32(gy)?) {
            (Some(xs), Some(ys), Some(gs)) => {
                let targets: Vec<u32> = self.idx.flatten_all()?.to_vec1()?;
                let vocab = x.dim(1)?;
                Tensor::from_vec(
                    backward_cpu(&xs, vocab, &targets, &ys, &gs),
                    x.shape(),
                    x.device(),
                )?
            }
            _ => target_log_probs_backward(&x, &self.idx, y, gy)?,
        };
        dx.to_dtype(logits.dtype()).map(Some)
    }
}

/// The backward as tensor ops: `gy · (onehot(target) - softmax(x))`, with the
/// log-sum-exp recovered from the output.
pub(crate) fn target_log_probs_backward(
    x: &Tensor,
    idx: &Tensor,
    y: &Tensor,
    gy: &Tensor,
) -> candle_core::Result<Tensor> {
    let lse = (x.gather(idx, 1)?.squeeze(1)? - y)?.unsqueeze(1)?;
    let g = gy.to_dtype(DType::F32)?.unsqueeze(1)?;
    let soft = x.broadcast_sub(&lse)?.exp()?;
    let dx = soft.broadcast_mul(&g)?.neg()?;
    dx.scatter_add(idx, &g, 1)
}

fn backward_cpu(x: &[f32], vocab: usize, targets: &[u32], y: &[f32], gy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(vocab)
        .zip(x.par_chunks(vocab))
        .enumerate()
        .for_each(|(i, (d, row))| {
            let t = targets[i] as usize;
            let lse = row[t] - y[i];
            for (o, v) in d.iter_mut().zip(row) {
                *o = -gy[i] * (v - lse).exp();
            }
            d[t] += gy[i];
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::testing::{assert_close, check_gradients, Input};
    use candle_core::{Device, Var};

    #[test]
    fn loop_and_tensor_ops_agree() {
        let dev = Device::Cpu;
        let x = crate::seeded_randn(1, 0.0, 3.0, (5, 11), &dev).unwrap();
        let targets = [0u32, 10, 3, 3, 7];
        let idx = Tensor::from_slice(&targets, (5, 1), &dev).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = log_probs_cpu(&v(&x), 11, &targets);
        let y_t =
            (x.gather(&idx, 1).unwrap().squeeze(1).unwrap() - log_sum_exp(&x).unwrap()).unwrap();
        assert_close(&y, &v(&y_t), 1e-6);
        let g = crate::seeded_randn(2, 0.0, 1.0, 5, &dev).unwrap();
        let a = target_log_probs_backward(&x, &idx, &y_t, &g).unwrap();
        let b = backward_cpu(&v(&x), 11, &targets, &y, &v(&g));
        assert_close(&v(&a), &b, 1e-6);
    }

    #[test]
    fn gradients_match_log_softmax() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&crate::seeded_randn(3, 0.0, 3.0, (6, 13), &dev).unwrap()).unwrap();
        let targets = [1u32, 12, 0, 5, 5, 9];
        let idx = Tensor::from_slice(&targets, (6, 1), &dev).unwrap();
        check_gradients(
            &[Input::new("logits", &x)],
            |t| target_log_probs(t[0], &targets),
            |t| {
                candle_nn::ops::log_softmax(t[0], D::Minus1)?
                    .gather(&idx, 1)?
                    .squeeze(1)
            },
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(target_log_probs(&x, &[0]).is_err());
        assert!(target_log_probs(&x, &[0, 4]).is_err());
    }
}

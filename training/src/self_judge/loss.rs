//! The DPO family of losses on self-judged pairs and the metrics the seed logs.

use candle_core::Tensor;

use crate::config::self_judge_args::LossType;

/// Per-pair losses and rewards of a batch.
pub struct DpoTerms {
    /// `[n]` differentiable per-pair losses.
    pub losses: Tensor,
    /// `β (log π(chosen) − log π_ref(chosen))`, detached.
    pub chosen_rewards: Vec<f32>,
    /// `β (log π(rejected) − log π_ref(rejected))`, detached.
    pub rejected_rewards: Vec<f32>,
}

/// The seed's `dpo_loss`: with `logits = (π_c − π_r) − (ref_c − ref_r)`,
/// sigmoid `−log σ(β logits)`, hinge `relu(1 − β logits)`, ipo `(logits − 1/(2β))²`.
/// All inputs are `[n]` sequence log-probabilities; the references carry no gradient.
pub fn dpo_terms(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
    kind: LossType,
) -> candle_core::Result<DpoTerms> {
    let (ref_chosen, ref_rejected) = (ref_chosen.detach(), ref_rejected.detach());
    let logits = ((policy_chosen - policy_rejected)? - (&ref_chosen - &ref_rejected)?)?;
    let losses = match kind {
        LossType::Sigmoid => {
            // −log σ(x) = softplus(z) = relu(z) + log(1 + e^{−|z|}) with z = −βx, stable
            // for any x. relu and abs must see the same z: their derivatives at 0 (both
            // taken as for z > 0) then add up to σ(0) = 1/2, the true slope where the
            // policy equals the reference (every pair of the first step).
            let z = (&logits * -beta)?;
            let tail = ((z.abs()?.neg()?.exp()? + 1.0)?).log()?;
            (z.relu()? + tail)?
        }
        LossType::Hinge => ((&logits * -beta)? + 1.0)?.relu()?,
        LossType::Ipo => (&logits - 1.0 / (2.0 * beta))?.sqr()?,
    };
    let chosen_rewards = ((policy_chosen.detach() - &ref_chosen)? * beta)?.to_vec1()?;
    let rejected_rewards = ((policy_rejected.detach() - &ref_rejected)? * beta)?.to_vec1()?;
    Ok(DpoTerms {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64
}

fn std(xs: &[f32]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / xs.len().max(1) as f64).sqrt()
}

/// Everything measured on one batch of (chosen, rejected) sequences.
#[derive(Default)]
pub struct BatchStats {
    pub loss: f64,
    pub terms: (Vec<f32>, Vec<f32>),
    /// Policy / reference log-probabilities of chosen and rejected.
    pub logps: [Vec<f32>; 4],
    /// Mean logits of policy chosen/rejected, reference chosen/rejected.
    pub logits: [Vec<f32>; 4],
    /// Response lengths (learned tokens) of chosen and rejected.
    pub lengths: (Vec<f32>, Vec<f32>),
}

impl BatchStats {
    /// The seed's metric names and values (prefix `eval_` for evaluation).
    pub fn metrics(&self, prefix: &str) -> Vec<(String, f64)> {
        let (c, r) = &self.terms;
        let acc: Vec<f32> = c.iter().zip(r).map(|(a, b)| f32::from(a > b)).collect();
        let margin: Vec<f32> = c.iter().zip(r).map(|(a, b)| a - b).collect();
        let mut out = vec![
            ("loss".to_string(), self.loss),
            ("rewards/chosen".into(), mean(c)),
            ("rewards/rejected".into(), mean(r)),
            ("rewards/accuracies".into(), mean(&acc)),
            ("rewards/margins".into(), mean(&margin)),
        ];
        let names = [
            "policy_chosen",
            "policy_rejected",
            "reference_chosen",
            "reference_rejected",
        ];
        for (n, v) in names.iter().zip(&self.logps) {
            out.push((format!("logps/{n}"), mean(v)));
        }
        for (n, v) in names.iter().zip(&self.logits) {
            out.push((format!("logits/{n}"), mean(v)));
        }
        for (n, v) in [("chosen", &self.lengths.0), ("rejected", &self.lengths.1)] {
            out.push((format!("tokens/{n}_length_mean"), mean(v)));
            out.push((format!("tokens/{n}_length_std"), std(v)));
        }
        out.into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn losses_and_rewards_match_hand_computed_values() {
        // logits = (pc − pr) − (rc − rr) = (−1 − −3) − (−2 − −2.5) = 2 − 0.5 = 1.5, and
        // for the second pair (−4 − −2) − (−3 − −3) = −2.
        let (pc, pr) = (t(&[-1.0, -4.0]), t(&[-3.0, -2.0]));
        let (rc, rr) = (t(&[-2.0, -3.0]), t(&[-2.5, -3.0]));
        let beta = 0.5;
        let want = |kind| -> Vec<f32> {
            [1.5f64, -2.0]
                .iter()
                .map(|&l| match kind {
                    LossType::Sigmoid => -(1.0 / (1.0 + (-beta * l).exp())).ln(),
                    LossType::Hinge => (1.0 - beta * l).max(0.0),
                    LossType::Ipo => (l - 1.0 / (2.0 * beta)).powi(2),
                } as f32)
                .collect()
        };
        // Written out: sigmoid [0.3869, 1.3133], hinge [0.25, 2.0], ipo [0.25, 9.0].
        for (kind, literal) in [
            (LossType::Sigmoid, [0.386_871, 1.313_262]),
            (LossType::Hinge, [0.25, 2.0]),
            (LossType::Ipo, [0.25, 9.0]),
        ] {
            let d = dpo_terms(&pc, &pr, &rc, &rr, beta, kind).unwrap();
            let got: Vec<f32> = d.losses.to_vec1().unwrap();
            for ((g, w), l) in got.iter().zip(want(kind)).zip(literal) {
                assert!(
                    (g - w).abs() < 1e-6 && (g - l).abs() < 1e-5,
                    "{kind:?}: {got:?}"
                );
            }
            // rewards: β(pc − rc) = [0.5, −0.5], β(pr − rr) = [−0.25, 0.5]
            assert_eq!(d.chosen_rewards, vec![0.5, -0.5]);
            assert_eq!(d.rejected_rewards, vec![-0.25, 0.5]);
        }
        // Extreme logits stay finite.
        let d = dpo_terms(
            &t(&[-1e4]),
            &t(&[0.0]),
            &t(&[0.0]),
            &t(&[0.0]),
            1.0,
            LossType::Sigmoid,
        )
        .unwrap();
        assert_eq!(d.losses.to_vec1::<f32>().unwrap(), vec![1e4]);
        // IPO's target 1/(2β) at a β where it differs from 2β: (1.5 − 2.5)² = 1.
        let d = dpo_terms(&pc, &pr, &rc, &rr, 0.2, LossType::Ipo).unwrap();
        let got: Vec<f32> = d.losses.to_vec1().unwrap();
        assert!(
            (got[0] - 1.0).abs() < 1e-5 && (got[1] - 20.25).abs() < 1e-4,
            "{got:?}"
        );
    }

    #[test]
    fn gradient_flows_to_the_policy_only() {
        let pc = candle_core::Var::new(&[-1.0f32], &Device::Cpu).unwrap();
        let rc = candle_core::Var::new(&[-2.0f32], &Device::Cpu).unwrap();
        let d = dpo_terms(
            pc.as_tensor(),
            &t(&[-3.0]),
            rc.as_tensor(),
            &t(&[-2.5]),
            0.5,
            LossType::Sigmoid,
        )
        .unwrap();
        let g = d.losses.sum_all().unwrap().backward().unwrap();
        // d/dpc of −log σ(β l) = −β σ(−β l) = −0.5 σ(−0.75)
        let want = -0.5 / (1.0 + 0.75f32.exp());
        let got: Vec<f32> = g.get(pc.as_tensor()).unwrap().to_vec1().unwrap();
        assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
        assert!(g.get(rc.as_tensor()).is_none());
    }

    #[test]
    fn the_slope_where_policy_equals_reference_is_beta_over_two() {
        // Policy = reference: logits 0, where relu and abs have their kinks.
        let pc = candle_core::Var::new(&[-1.0f32, -4.0], &Device::Cpu).unwrap();
        let d = dpo_terms(
            pc.as_tensor(),
            &t(&[-3.0, -2.0]),
            &t(&[-1.0, -4.0]),
            &t(&[-3.0, -2.0]),
            0.1,
            LossType::Sigmoid,
        )
        .unwrap();
        let got: Vec<f32> = d.losses.to_vec1().unwrap();
        assert!(got
            .iter()
            .all(|l| (l - std::f32::consts::LN_2).abs() < 1e-6));
        let g = d.losses.sum_all().unwrap().backward().unwrap();
        let slope: Vec<f32> = g.get(pc.as_tensor()).unwrap().to_vec1().unwrap();
        // d/dpc −log σ(β l) at l = 0 is −β σ(0) = −0.05.
        assert!(slope.iter().all(|s| (s + 0.05).abs() < 1e-7), "{slope:?}");
    }

    #[test]
    fn metrics_use_the_seed_names() {
        let s = BatchStats {
            loss: 0.7,
            terms: (vec![0.5, -0.5], vec![-0.25, 0.5]),
            logps: [
                vec![-1.0, -4.0],
                vec![-3.0, -2.0],
                vec![-2.0, -3.0],
                vec![-2.5, -3.0],
            ],
            logits: [vec![0.1; 2], vec![0.2; 2], vec![0.3; 2], vec![0.4; 2]],
            lengths: (vec![2.0, 4.0], vec![3.0, 3.0]),
        };
        let m: std::collections::HashMap<String, f64> = s.metrics("eval_").into_iter().collect();
        assert_eq!(m["eval_rewards/accuracies"], 0.5);
        assert_eq!(m["eval_rewards/margins"], (0.75 - 1.0) / 2.0);
        assert_eq!(m["eval_logps/policy_chosen"], -2.5);
        assert_eq!(m["eval_tokens/chosen_length_mean"], 3.0);
        assert_eq!(m["eval_tokens/chosen_length_std"], 1.0);
        assert_eq!(m.len(), 17);
    }
}

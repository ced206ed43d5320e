//! AdamW as torch implements it (decoupled weight decay, bias correction), the HF
//! learning-rate schedules, and global-norm gradient clipping.

use candle_core::backprop::GradStore;
use std::collections::HashMap;

use candle_core::{Tensor, Var};

/// HF `lr_scheduler_type` values we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
}

impl ScheduleKind {
    /// Parses a scheduler name; others are refused naming the supported ones.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "constant" => Self::Constant,
            "constant_with_warmup" => Self::ConstantWithWarmup,
            "linear" => Self::Linear,
            "cosine" => Self::Cosine,
            other => anyhow::bail!("lr_scheduler_type `{other}` is not supported (constant, constant_with_warmup, linear, cosine)"),
        })
    }
}

/// Learning rate as a function of the optimizer step (HF `LambdaLR`: step k uses
/// `lr * factor(k)`).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// `warmup_steps` wins over `warmup_ratio`; the ratio is rounded up as HF does.
    pub fn new(
        kind: ScheduleKind,
        lr: f64,
        total_steps: usize,
        warmup_steps: Option<usize>,
        warmup_ratio: f64,
    ) -> Self {
        let warmup_steps = warmup_steps
            .filter(|&w| w > 0)
            .unwrap_or_else(|| (warmup_ratio * total_steps as f64).ceil() as usize);
        Self {
            kind,
            lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warm = |f: f64| {
            if step < self.warmup_steps {
                s / w.max(1.0)
            } else {
                f
            }
        };
        let factor = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::ConstantWithWarmup => warm(1.0),
            ScheduleKind::Linear => warm(((t - s) / (t - w).max(1.0)).max(0.0)),
            ScheduleKind::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                warm((0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0))
            }
        };
        self.lr * factor
    }
}

/// AdamW state for a list of variables.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken.
    pub step: usize,
    /// First and second moments, one pair per variable.
    pub moments: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    /// HF defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn new(vars: &[Var], weight_decay: f64) -> candle_core::Result<Self> {
        let moments = vars
            .iter()
            .map(|v| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            moments,
        })
    }

    /// One update with learning rate `lr`; variables without a gradient are left as
    /// they are.
    pub fn update(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for (v, (m, s)) in vars.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            *s = ((&*s * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&*m / c1)?;
            let v_hat = (&*s / c2)?;
            let decayed = (v.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let step = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            v.set(&(decayed - (step * lr)?)?)?;
        }
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars`.
pub fn grad_norm(vars: &[Var], grads: &GradStore) -> candle_core::Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    Ok(sq.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (torch's
/// `clip_grad_norm_`, with its 1e-6 guard). Returns the norm before clipping.
pub fn clip_grads(vars: &[Var], grads: &mut GradStore, max_norm: f64) -> candle_core::Result<f64> {
    let norm = grad_norm(vars, grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * coef)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

impl AdamW {
    /// The moments as named tensors (`<name>.exp_avg`, `<name>.exp_avg_sq`), for saving.
    pub fn state_tensors(&self, names: &[String]) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (n, (m, v)) in names.iter().zip(&self.moments) {
            out.insert(format!("{n}.exp_avg"), m.clone());
            out.insert(format!("{n}.exp_avg_sq"), v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        names: &[String],
        saved: &HashMap<String, Tensor>,
        step: usize,
    ) -> anyhow::Result<()> {
        for (n, (m, v)) in names.iter().zip(self.moments.iter_mut()) {
            for (suffix, slot) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let key = format!("{n}.{suffix}");
                let t = saved
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimizer state has no {key}"))?;
                anyhow::ensure!(
                    t.dims() == slot.dims(),
                    "optimizer state {key} has shape {:?}, expected {:?}",
                    t.dims(),
                    slot.dims()
                );
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedules_match_hf_formulas() {
        let s = Schedule::new(ScheduleKind::Cosine, 1.0, 100, None, 0.03);
        assert_eq!(s.warmup_steps, 3);
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.lr_at(3), 1.0);
        assert!(
            (s.lr_at(3 + 97 / 2) - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos())).abs()
                < 1e-12
        );
        let l = Schedule::new(ScheduleKind::Linear, 2.0, 10, Some(2), 0.5);
        assert_eq!(l.warmup_steps, 2);
        assert!((l.lr_at(1) - 1.0).abs() < 1e-12 && (l.lr_at(6) - 2.0 * 4.0 / 8.0).abs() < 1e-12);
        let c = Schedule::new(ScheduleKind::ConstantWithWarmup, 5e-6, 30, None, 0.1);
        assert_eq!((c.warmup_steps, c.lr_at(29)), (3, 5e-6));
        assert!((c.lr_at(1) - 5e-6 / 3.0).abs() < 1e-18);
        assert_eq!(
            Schedule::new(ScheduleKind::Constant, 0.1, 5, None, 0.5).lr_at(0),
            0.1
        );
        assert!(ScheduleKind::parse("polynomial").is_err());
    }

    #[test]
    fn adamw_matches_a_hand_computed_step() {
        let v = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let loss = (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap(); // grad = v
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(std::slice::from_ref(&v), 0.1).unwrap();
        opt.update(std::slice::from_ref(&v), &grads, 0.01).unwrap();
        // Step 1: m_hat = g, v_hat = g^2, update = g/(|g|+eps) = sign(g).
        let got: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let v = Var::from_tensor(&Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()).unwrap();
        let loss = (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let mut grads = loss.backward().unwrap();
        let vars = [v];
        let before = clip_grads(&vars, &mut grads, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grad_norm(&vars, &grads).unwrap() - 1.0).abs() < 1e-5);
    }
}

//! AdamW as torch implements it (decoupled weight decay, bias correction), the HF
//! learning-rate schedules, and global-norm gradient clipping.

use candle_core::backprop::GradStore;
use std::collections::HashMap;

use candle_core::{InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;

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
    /// Per variable: whether weight decay applies (HF's Trainer exempts biases and
    /// normalisation weights).
    pub decays: Vec<bool>,
}

/// Whether HF's Trainer decays the parameter `name`: not a bias nor a normalisation
/// weight (its forbidden name patterns `bias`, `layernorm`, `rmsnorm`, a `norm` path
/// segment, a segment ending in `_norm`).
pub fn decays(name: &str) -> bool {
    let n = name.to_lowercase();
    let patterned = ["bias", "layernorm", "rmsnorm"]
        .iter()
        .any(|p| n.contains(p));
    let segment = n.split('.').any(|s| s == "norm" || s.ends_with("_norm"));
    !(patterned || segment)
}

impl AdamW {
    /// HF defaults: betas (0.9, 0.999), eps 1e-8; `weight_decay` on every variable.
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
            decays: vec![true; vars.len()],
        })
    }

    /// [`AdamW::new`] over named variables, with weight decay where HF's Trainer puts
    /// it ([`decays`]).
    pub fn for_named(vars: &[(String, Var)], weight_decay: f64) -> candle_core::Result<Self> {
        let plain: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = Self::new(&plain, weight_decay)?;
        opt.decays = vars.iter().map(|(n, _)| decays(n)).collect();
        Ok(opt)
    }

    /// One update with learning rate `lr`; variables without a gradient are left as
    /// they are. f32 on the CPU runs in place, three parallel passes per variable
    /// ([`adamw_in_place`]); elsewhere as tensor ops, with the same f32 arithmetic.
    pub fn update(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let k = AdamWStep {
            b1: self.beta1,
            b2: self.beta2,
            c1: 1.0 - self.beta1.powi(t),
            c2: 1.0 - self.beta2.powi(t),
            eps: self.eps,
            lr,
            decay: 1.0 - lr * self.weight_decay,
        };
        assert_eq!(
            vars.len(),
            self.moments.len(),
            "one moment pair per variable"
        );
        for ((v, (m, s)), &decayed) in vars.iter().zip(self.moments.iter_mut()).zip(&self.decays) {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let k = if decayed {
                k
            } else {
                AdamWStep { decay: 1.0, ..k }
            };
            // The moments must not keep a gradient's graph alive from step to step.
            let g = &g.detach();
            let in_place = [v.as_tensor(), &*m, &*s, g]
                .iter()
                .all(|x| x.device().is_cpu() && x.dtype() == candle_core::DType::F32);
            if in_place {
                adamw_in_place(v.as_tensor(), m, s, &g.contiguous()?, k)?;
            } else {
                let (w, m2, s2) = k.composed(v.as_tensor(), m, s, g)?;
                *m = m2;
                *s = s2;
                v.set(&w)?;
            }
        }
        Ok(())
    }
}

/// The constants of one AdamW step (torch's formulas, bias-corrected).
#[derive(Debug, Clone, Copy)]
struct AdamWStep {
    b1: f64,
    b2: f64,
    c1: f64,
    c2: f64,
    eps: f64,
    lr: f64,
    decay: f64,
}

impl AdamWStep {
    /// The step as tensor ops: new (weight, m, s).
    fn composed(
        &self,
        w: &Tensor,
        m: &Tensor,
        s: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let m = ((m * self.b1)? + (g * (1.0 - self.b1))?)?;
        let s = ((s * self.b2)? + (g.sqr()? * (1.0 - self.b2))?)?;
        let m_hat = (&m / self.c1)?;
        let v_hat = (&s / self.c2)?;
        let decayed = (w * self.decay)?;
        let step = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
        Ok(((decayed - (step * self.lr)?)?, m, s))
    }
}

/// One pass of the step, in the f32 arithmetic of [`AdamWStep::composed`] (candle's
/// affine ops multiply by the f64 constant rounded to f32, and divide by multiplying by
/// the rounded reciprocal): a moment `x = x · keep + g · take` (of `g²` for the second),
/// or the weight.
struct Moment {
    name: &'static str,
    keep: f64,
    square: bool,
}
struct Weight(AdamWStep);

fn cpu_f32_mut<'a>(
    s: &'a mut candle_core::CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a mut [f32]> {
    match s {
        candle_core::CpuStorage::F32(v) if l.is_contiguous() => {
            let start = l.start_offset();
            Ok(&mut v[start..start + l.shape().elem_count()])
        }
        _ => candle_core::bail!("adamw: contiguous f32 expected"),
    }
}

fn cpu_f32_ref<'a>(s: &'a candle_core::CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match s {
        candle_core::CpuStorage::F32(v) if l.is_contiguous() => {
            let start = l.start_offset();
            Ok(&v[start..start + l.shape().elem_count()])
        }
        _ => candle_core::bail!("adamw: contiguous f32 expected"),
    }
}

const BLOCK: usize = 1 << 15;

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(
        &self,
        x: &mut candle_core::CpuStorage,
        lx: &Layout,
        g: &candle_core::CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        let (keep, take, square) = (self.keep as f32, (1.0 - self.keep) as f32, self.square);
        let (x, g) = (cpu_f32_mut(x, lx)?, cpu_f32_ref(g, lg)?);
        x.par_chunks_mut(BLOCK)
            .zip(g.par_chunks(BLOCK))
            .for_each(|(x, g)| {
                for (x, g) in x.iter_mut().zip(g) {
                    let g = if square { g * g } else { *g };
                    *x = *x * keep + g * take;
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for Weight {
    fn name(&self) -> &'static str {
        "adamw-w"
    }
    fn cpu_fwd(
        &self,
        w: &mut candle_core::CpuStorage,
        lw: &Layout,
        m: &candle_core::CpuStorage,
        lm: &Layout,
        s: &candle_core::CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        let k = self.0;
        let (r1, r2) = ((1.0 / k.c1) as f32, (1.0 / k.c2) as f32);
        let (eps, lr, decay) = (k.eps as f32, k.lr as f32, k.decay as f32);
        let (w, m, s) = (
            cpu_f32_mut(w, lw)?,
            cpu_f32_ref(m, lm)?,
            cpu_f32_ref(s, ls)?,
        );
        w.par_chunks_mut(BLOCK)
            .zip(m.par_chunks(BLOCK).zip(s.par_chunks(BLOCK)))
            .for_each(|(w, (m, s))| {
                for ((w, m), s) in w.iter_mut().zip(m).zip(s) {
                    let step = (m * r1) / ((s * r2).sqrt() + eps);
                    *w = *w * decay - step * lr;
                }
            });
        Ok(())
    }
}

/// The step in place on the CPU: `m`, `s` and the weight updated where they are (a
/// step allocates nothing; the composed form allocates seven weight-sized tensors).
fn adamw_in_place(
    w: &Tensor,
    m: &Tensor,
    s: &Tensor,
    g: &Tensor,
    k: AdamWStep,
) -> candle_core::Result<()> {
    let first = Moment {
        name: "adamw-m",
        keep: k.b1,
        square: false,
    };
    let second = Moment {
        name: "adamw-s",
        keep: k.b2,
        square: true,
    };
    m.inplace_op2(g, &first)?;
    s.inplace_op2(g, &second)?;
    w.inplace_op3(m, s, &Weight(k))
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
                *slot = t.to_device(slot.device())?;
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
    fn decay_spares_biases_and_norms_as_hf_does() {
        for (name, decayed) in [
            ("model.layers.0.self_attn.q_proj.weight", true),
            ("model.embed_tokens.weight", true),
            (
                "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight",
                true,
            ),
            ("model.layers.0.input_layernorm.weight", false),
            ("model.layers.3.post_attention_layernorm.weight", false),
            ("model.norm.weight", false),
            ("model.layers.0.self_attn.q_norm.weight", false),
            ("model.layers.0.self_attn.q_proj.bias", false),
            ("transformer.ln_f.RMSNorm.weight", false),
            ("model.normalizer.weight", true),
        ] {
            assert_eq!(decays(name), decayed, "{name}");
        }
    }

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
    fn in_place_step_equals_the_tensor_ops() {
        let dev = Device::Cpu;
        let k = AdamWStep {
            b1: 0.9,
            b2: 0.999,
            c1: 1.0 - 0.9f64.powi(3),
            c2: 1.0 - 0.999f64.powi(3),
            eps: 1e-8,
            lr: 3e-4,
            decay: 1.0 - 3e-4 * 0.01,
        };
        let r =
            |seed, scale| self_judge_model::seeded_randn(seed, 0.0, scale, 70_000, &dev).unwrap();
        let (w, m, g) = (r(1, 1.0), r(2, 0.1), r(3, 0.5));
        let s = r(4, 0.1).sqr().unwrap();
        let (w2, m2, s2) = k.composed(&w, &m, &s, &g).unwrap();
        let (w, m, s) = (w.copy().unwrap(), m.copy().unwrap(), s.copy().unwrap());
        adamw_in_place(&w, &m, &s, &g, k).unwrap();
        let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        assert_eq!(v(&m), v(&m2));
        assert_eq!(v(&s), v(&s2));
        assert_eq!(v(&w), v(&w2));
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

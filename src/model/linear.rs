//! Linear projections over dense or GGUF-quantized weights, with an optional LoRA
//! adapter so that training can reuse the inference decoder unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};
use rayon::prelude::*;

use super::autograd::{self, DropoutMask};
use super::ops::Pass;
use super::packed::PackedWeight;
use super::{ModelError, Result};

/// Where a projection's weight lives.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` dense weight in the model dtype.
    Dense(Tensor),
    /// Quantized GGUF weight, multiplied without dequantizing.
    Quantized(QMatMul),
    /// An f32 CPU weight packed once for the register kernel of [`super::packed`]:
    /// serving only (it has no backward), in place of the dense copy.
    Packed(Arc<PackedWeight>),
}

impl LinearWeight {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Dense(w) => {
                let d = w.dims();
                (d[0], d[d.len() - 1])
            }
            Self::Quantized(q) => {
                let d = match q {
                    QMatMul::QTensor(t) => t.shape().dims().to_vec(),
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims().to_vec(),
                };
                (d[0], d[d.len() - 1])
            }
            Self::Packed(p) => p.dims(),
        }
    }
}

/// A low-rank adapter `x · Aᵀ · Bᵀ · scale` added to a projection. The model without
/// its adapters (the reference under LoRA) is a copy with them removed
/// ([`super::Decoder::without_adapters`]): no switch is shared between the two.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    pub scale: f64,
    pub dropout: Option<LoraDropout>,
}

/// Dropout on the adapter's input while training. Masks come from a counter-based seeded
/// generator (not candle's thread RNG) so that a resumed run draws the same masks as an
/// uninterrupted one: the counter is part of the saved training state.
#[derive(Debug, Clone)]
pub struct LoraDropout {
    pub p: f32,
    pub seed: u64,
    /// Masks drawn so far, shared by all adapters of a model.
    pub counter: Arc<AtomicU64>,
}

impl LoraDropout {
    /// Draws the next mask (advancing the shared counter) as a generator that makes the
    /// same mask every time it is asked, so a backward can recompute it instead of
    /// keeping it; `None` when `p` is 0.
    fn draw(&self) -> Option<DropoutMask> {
        if self.p <= 0.0 {
            return None;
        }
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        let (p, seed) = (self.p, self.seed);
        Some(DropoutMask::new(move |like: &Tensor| {
            let mask = dropout_mask(seed, k, p, like.elem_count());
            Tensor::from_vec(mask, like.shape(), like.device())?.to_dtype(like.dtype())
        }))
    }
}

/// Mask `k` of a generator seeded with `seed`: element `i` is 0 with probability `p`,
/// else `1 / (1 - p)`. Each element is a hash of (seed, k, i) (SplitMix64), so blocks
/// are drawn in parallel and a mask is the same however often it is drawn.
fn dropout_mask(seed: u64, k: u64, p: f32, n: usize) -> Vec<f32> {
    const BLOCK: usize = 1 << 14;
    let base = splitmix64(seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keep = 1.0 / (1.0 - p);
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(c, block)| {
            for (i, m) in block.iter_mut().enumerate() {
                let h = splitmix64(base ^ (c * BLOCK + i) as u64);
                // The top 24 bits as a uniform number in [0, 1).
                let u = (h >> 40) as f32 / (1u32 << 24) as f32;
                *m = if u < p { 0.0 } else { keep };
            }
        });
    mask
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x Wᵀ` against a packed weight, for `x` of any rank (leading dims kept).
fn packed_matmul_t(xs: &Tensor, w: &PackedWeight, pass: Pass) -> Result<Tensor> {
    let (out, inp) = w.dims();
    if pass.differentiable() {
        return Err(ModelError::Input(
            "a packed weight serves inference only; training needs the dense weight".into(),
        ));
    }
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 || xs.dims().last() != Some(&inp) {
        return Err(ModelError::Input(format!(
            "a packed [{out}, {inp}] f32 CPU weight cannot take a {:?} {:?} input of shape {:?}",
            xs.device().location(),
            xs.dtype(),
            xs.dims()
        )));
    }
    let m = xs.elem_count() / inp.max(1);
    let mut y = vec![0f32; m * out];
    {
        let xs = xs.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            unreachable!("checked: a CPU tensor")
        };
        let x = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * inp];
        w.matmul_t(x, m, &mut y);
    }
    let mut shape = xs.dims().to_vec();
    *shape.last_mut().expect("rank >= 1") = out;
    Ok(Tensor::from_vec(y, shape, xs.device())?)
}

/// `y = x Wᵀ + b (+ LoRA)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
    /// Mixed precision (HF's `bf16: true`, i.e. autocast): the product runs in this
    /// dtype, with the input, the weight, the bias and the adapter cast to it, and the
    /// output cast back to the input's dtype. The casts are differentiable, so trained
    /// f32 weights (the master copy) get f32 gradients. `None`: the input's dtype.
    /// Quantized weights ignore it (their kernels take and give f32).
    pub compute: Option<DType>,
}

impl Linear {
    /// A projection over a dense `[out, in]` weight.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: LinearWeight::Dense(weight),
            bias,
            lora: None,
            compute: None,
        }
    }

    /// A projection over a quantized weight.
    pub fn quantized(weight: QMatMul) -> Self {
        Self {
            weight: LinearWeight::Quantized(weight),
            bias: None,
            lora: None,
            compute: None,
        }
    }

    /// Applies the projection to `[T, in]` (or any leading dims), as at inference.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, Pass::Inference)
    }

    /// Applies the projection in `pass`: LoRA dropout only in a training pass that
    /// asks for it.
    pub fn forward_t(&self, xs: &Tensor, pass: Pass) -> Result<Tensor> {
        let dense = matches!(self.weight, LinearWeight::Dense(_));
        if let Some(dt) = self.compute.filter(|&dt| dense && dt != xs.dtype()) {
            let y = self.cast(dt)?.forward_t(&xs.to_dtype(dt)?, pass)?;
            return Ok(y.to_dtype(xs.dtype())?);
        }
        if let (LinearWeight::Dense(w), true) = (&self.weight, pass.differentiable()) {
            if !w.track_op() {
                return self.frozen(xs, w, pass);
            }
        }
        let mut y = match &self.weight {
            LinearWeight::Packed(p) => packed_matmul_t(xs, p, pass)?,
            LinearWeight::Dense(w) if xs.rank() == 2 => {
                // A decode step's few rows: read the weight once instead of packing it.
                let skinny = match pass.differentiable() {
                    false => super::skinny::matmul_t(xs, w)?,
                    true => None,
                };
                match skinny {
                    Some(y) => y,
                    None => xs.matmul(&w.t()?)?,
                }
            }
            LinearWeight::Dense(w) => xs.broadcast_matmul(&w.t()?)?,
            LinearWeight::Quantized(q) => {
                let dt = xs.dtype();
                // Quantized kernels take f32 activations.
                q.forward(&xs.to_dtype(candle_core::DType::F32)?)?
                    .to_dtype(dt)?
            }
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let x = match l
                .dropout
                .as_ref()
                .filter(|_| pass.dropout())
                .and_then(|d| d.draw())
            {
                Some(mask) => (xs * mask.tensor(xs)?)?,
                None => xs.clone(),
            };
            let low = x.broadcast_matmul(&l.a.t()?)?.broadcast_matmul(&l.b.t()?)?;
            y = (y + (low * l.scale)?)?;
        }
        Ok(y)
    }
}

impl Linear {
    /// Packs a frozen f32 dense weight on the CPU for serving (see [`super::packed`]);
    /// other weights stay as they are. Returns whether it packed.
    pub fn pack(&mut self) -> Result<bool> {
        let LinearWeight::Dense(w) = &self.weight else {
            return Ok(false);
        };
        if !w.device().is_cpu() || w.dtype() != DType::F32 || w.rank() != 2 || w.track_op() {
            return Ok(false);
        }
        let (out, inp) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        self.weight = LinearWeight::Packed(Arc::new(PackedWeight::pack(&values, out, inp)));
        Ok(true)
    }

    /// Detaches a dense weight from the graph it is trained in (its values stay).
    pub fn detach_weight(&mut self) {
        if let LinearWeight::Dense(w) = &self.weight {
            self.weight = LinearWeight::Dense(w.detach());
        }
    }

    /// The dense weight back from a packed one (a no-op for others).
    pub fn unpack(&mut self) -> Result<()> {
        if let LinearWeight::Packed(p) = &self.weight {
            let (out, inp) = p.dims();
            let w = Tensor::from_vec(p.unpack(), (out, inp), &candle_core::Device::Cpu)?;
            self.weight = LinearWeight::Dense(w);
        }
        Ok(())
    }

    /// This projection with its dense weight, bias and adapter in `dt` (casts that keep
    /// the graph, and no copy of what already is `dt`), computing in its input's dtype.
    fn cast(&self, dt: DType) -> Result<Self> {
        let weight = match &self.weight {
            LinearWeight::Dense(w) => LinearWeight::Dense(w.to_dtype(dt)?),
            other => other.clone(),
        };
        let lora = match &self.lora {
            Some(l) => Some(Lora {
                a: l.a.to_dtype(dt)?,
                b: l.b.to_dtype(dt)?,
                ..l.clone()
            }),
            None => None,
        };
        Ok(Self {
            weight,
            bias: self.bias.as_ref().map(|b| b.to_dtype(dt)).transpose()?,
            lora,
            compute: None,
        })
    }

    /// Whether the weight, bias or adapter is trained.
    pub fn has_trainable(&self) -> bool {
        let dense = matches!(&self.weight, LinearWeight::Dense(w) if w.track_op());
        // A packed weight is frozen (only untracked weights are packed).
        let lora = self
            .lora
            .as_ref()
            .is_some_and(|l| l.a.track_op() || l.b.track_op());
        dense || lora || self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    /// A training pass over a frozen dense weight: one op with its own backward (no
    /// gradient for the weight; under LoRA the dropout mask is recomputed, not kept).
    fn frozen(&self, xs: &Tensor, w: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(match &self.lora {
            None => autograd::frozen_linear(xs, w, self.bias.as_ref())?,
            Some(l) => {
                let mask = l
                    .dropout
                    .as_ref()
                    .filter(|_| pass.dropout())
                    .and_then(|d| d.draw());
                autograd::dropout_lora(xs, w, self.bias.as_ref(), (&l.a, &l.b, l.scale), mask)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::seeded_randn;
    use candle_core::{Device, Var};

    fn max_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// `compute: Some(BF16)` is autocast: the product of the bf16-rounded input and
    /// weight (plus the bf16 bias), returned in f32, and an f32 gradient for the f32
    /// master weight; the LoRA path too, over a frozen bf16 weight.
    #[test]
    fn bf16_compute_is_autocast_over_f32_masters() {
        let dev = Device::Cpu;
        let bf = DType::BF16;
        let x = seeded_randn(1, 0.0, 1.0, (3, 16), &dev).unwrap();
        let w = Var::from_tensor(&seeded_randn(2, 0.0, 0.5, (8, 16), &dev).unwrap()).unwrap();
        let b = seeded_randn(3, 0.0, 0.5, 8, &dev).unwrap();
        let mut lin = Linear::dense(w.as_tensor().clone(), Some(b.clone()));
        lin.compute = Some(bf);
        let y = lin.forward_t(&x, Pass::TRAIN).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let want = x
            .to_dtype(bf)
            .unwrap()
            .matmul(&w.as_tensor().to_dtype(bf).unwrap().t().unwrap())
            .unwrap()
            .broadcast_add(&b.to_dtype(bf).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(max_abs(&(&y - &want).unwrap()), 0.0, "the bf16 product");
        let f32_y = x
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let rounding = max_abs(&(&y - &f32_y).unwrap());
        assert!(
            rounding > 0.0 && rounding < 0.05 * max_abs(&f32_y),
            "{rounding}"
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let gw = g.get(w.as_tensor()).expect("the master weight's gradient");
        assert_eq!(gw.dtype(), DType::F32);
        // d sum(x Wᵀ) / dW = column sums of x, taken over the bf16 input.
        let want_gw = x
            .to_dtype(bf)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_keepdim(0)
            .unwrap()
            .broadcast_as((8, 16))
            .unwrap();
        let err = max_abs(&(gw - &want_gw).unwrap());
        assert!(
            err <= 0.01 * max_abs(&want_gw),
            "weight gradient off by {err}"
        );

        // Frozen bf16 weight with an f32 adapter: the adapter gets f32 gradients.
        let a = Var::from_tensor(&seeded_randn(4, 0.0, 0.3, (2, 16), &dev).unwrap()).unwrap();
        let bb = Var::from_tensor(&seeded_randn(5, 0.0, 0.3, (8, 2), &dev).unwrap()).unwrap();
        let frozen = w.as_tensor().detach().to_dtype(bf).unwrap();
        let mut lora = Linear::dense(frozen.clone(), None);
        lora.compute = Some(bf);
        lora.lora = Some(Lora {
            a: a.as_tensor().clone(),
            b: bb.as_tensor().clone(),
            scale: 2.0,
            dropout: None,
        });
        let y = lora.forward_t(&x, Pass::TRAIN).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let xb = x.to_dtype(bf).unwrap();
        let low = xb
            .matmul(&a.as_tensor().to_dtype(bf).unwrap().t().unwrap())
            .unwrap()
            .matmul(&bb.as_tensor().to_dtype(bf).unwrap().t().unwrap())
            .unwrap();
        let want = (xb.matmul(&frozen.t().unwrap()).unwrap() + (low * 2.0).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let err = max_abs(&(&y - &want).unwrap());
        assert!(err <= 0.01 * max_abs(&want), "LoRA output off by {err}");
        let g = y.sum_all().unwrap().backward().unwrap();
        for v in [&a, &bb] {
            let gv = g.get(v.as_tensor()).expect("adapter gradient");
            assert_eq!(gv.dtype(), DType::F32);
            assert!(max_abs(gv) > 0.0);
        }
        // Without compute the same bf16 weight would need a bf16 input.
        lora.compute = None;
        assert!(lora.forward_t(&x, Pass::TRAIN).is_err());
    }

    #[test]
    fn dropout_masks_are_reproducible_and_drop_p() {
        let n = 200_000;
        let a = dropout_mask(7, 3, 0.1, n);
        assert_eq!(
            a,
            dropout_mask(7, 3, 0.1, n),
            "the same key draws the same mask"
        );
        assert_ne!(a, dropout_mask(7, 4, 0.1, n), "another key, another mask");
        assert_ne!(a, dropout_mask(8, 3, 0.1, n), "another seed, another mask");
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!((zeros - 0.1).abs() < 0.005, "dropped {zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        // Consecutive elements are not correlated: both-dropped pairs occur at p².
        let both = a.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64;
        assert!((both / (n - 1) as f64 - 0.01).abs() < 0.002, "pairs {both}");
    }
}

//! Attention over a whole packed batch in one call of flash-attention v2's
//! variable-length kernel (candle-flash-attn, feature `flash-attn`). The kernel reads
//! the sequence boundaries from `cu_seqlens`, so nothing is padded, no mask tensor is
//! built, and each query attends only within its own sequence (causal, aligned to the
//! end of its keys, which is what a cached prefix needs).

use candle_core::{DType, Device, Tensor};

use super::Result;

/// Whether the flash path can run with `dtype` on `device` in this build, for heads of
/// `head_dim` (the kernels take multiples of 8 up to 256).
pub fn available(device: &Device, dtype: DType, head_dim: usize) -> bool {
    unavailable_reason(device, dtype, head_dim).is_none()
}

/// Why [`available`] is false, for the error a caller sees; `None` when it is true.
pub fn unavailable_reason(device: &Device, dtype: DType, head_dim: usize) -> Option<String> {
    if !cfg!(feature = "flash-attn") {
        Some("flash attention needs a build with `--features flash-attn`".into())
    } else if !device.is_cuda() {
        Some("flash attention runs on CUDA devices only".into())
    } else if !matches!(dtype, DType::BF16 | DType::F16) {
        Some(format!(
            "flash attention needs bf16 or f16 activations, not {dtype:?}"
        ))
    } else if !head_dim.is_multiple_of(8) || head_dim > 256 {
        Some(format!(
            "flash attention takes head_dim a multiple of 8 up to 256, not {head_dim}"
        ))
    } else {
        None
    }
}

/// The sequence boundaries of one forward pass, on the device, shared by every layer.
#[derive(Debug, Clone)]
pub struct VarlenLens {
    /// `[n + 1]` u32: where each sequence's new tokens (queries) start.
    pub cu_q: Tensor,
    /// `[n + 1]` u32: where each sequence's keys start (cached + new).
    pub cu_k: Tensor,
    pub max_q: usize,
    pub max_k: usize,
}

impl VarlenLens {
    /// Boundaries for sequences of `new[i]` tokens after `past[i]` cached ones.
    pub fn new(new: &[usize], past: &[usize], device: &Device) -> Result<Self> {
        let cumulative = |lens: &mut dyn Iterator<Item = usize>| -> Vec<u32> {
            let mut acc = vec![0u32];
            for l in lens {
                acc.push(acc[acc.len() - 1] + l as u32);
            }
            acc
        };
        let cu_q = cumulative(&mut new.iter().copied());
        let cu_k = cumulative(&mut new.iter().zip(past).map(|(n, p)| n + p));
        let n = cu_q.len();
        Ok(Self {
            cu_q: Tensor::from_vec(cu_q, n, device)?,
            cu_k: Tensor::from_vec(cu_k, n, device)?,
            max_q: new.iter().copied().max().unwrap_or(0),
            max_k: new.iter().zip(past).map(|(n, p)| n + p).max().unwrap_or(0),
        })
    }
}

/// `q` `[t, hq, d]` over `k`, `v` `[total_k, hkv, d]` (grouped heads are shared by the
/// kernel), causal, with an optional sliding window of `window` positions (a query
/// sees itself and the `window - 1` before it). Returns `[t, hq * d]`.
#[cfg(feature = "flash-attn")]
pub fn attend_varlen(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lens: &VarlenLens,
    window: Option<usize>,
) -> Result<Tensor> {
    let (t, hq, d) = q.dims3()?;
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let out = candle_flash_attn::flash_attn_varlen_windowed(
        q,
        k,
        v,
        &lens.cu_q,
        &lens.cu_k,
        lens.max_q,
        lens.max_k,
        scale,
        window.map(|w| w.saturating_sub(1)),
        Some(0),
    )?;
    Ok(out.reshape((t, hq * d))?)
}

/// Without the feature the flash path cannot be selected ([`available`] is false), so
/// this is never reached; it fails rather than computing something else.
#[cfg(not(feature = "flash-attn"))]
pub fn attend_varlen(
    q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _lens: &VarlenLens,
    _window: Option<usize>,
) -> Result<Tensor> {
    let why = unavailable_reason(q.device(), q.dtype(), q.dim(2)?);
    Err(super::ModelError::Config(why.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_count_cached_keys() {
        let l = VarlenLens::new(&[3, 1, 2], &[0, 4, 5], &Device::Cpu).unwrap();
        assert_eq!(l.cu_q.to_vec1::<u32>().unwrap(), vec![0, 3, 4, 6]);
        assert_eq!(l.cu_k.to_vec1::<u32>().unwrap(), vec![0, 3, 8, 15]);
        assert_eq!((l.max_q, l.max_k), (3, 7));
    }

    #[test]
    fn cpu_is_never_flash() {
        assert!(!available(&Device::Cpu, DType::BF16, 64));
        let why = unavailable_reason(&Device::Cpu, DType::BF16, 64).unwrap();
        assert!(why.contains("flash"), "{why}");
    }
}

//! Causal grouped-query attention of one sequence with a backward that recomputes the
//! probabilities (as flash attention does): the graph keeps `q`, `k`, `v` and the
//! output, never the `[heads, n, n]` scores or probabilities.

use candle_core::{DType, Tensor, D};

use super::custom::{attach3, Backward3};

/// `softmax(q kᵀ / sqrt(d) + mask) v` for `q` `[n, hq, d]` and `k`, `v` `[total, hkv, d]`
/// (query heads grouped onto their key/value head), `[n, hq * d]`, with candle's
/// softmax kernel in f32. `mask` is the additive `[n, total]` causal mask or `None`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let g = Grouped::new(q, k)?;
    let (qg, kt, vt) = (
        g.queries(&q.detach())?,
        g.keys(&k.detach())?,
        g.keys(&v.detach())?,
    );
    let probs = g.probs(&qg, &kt, mask)?;
    let out = g.merge(&probs.matmul(&vt)?)?;
    attach3(
        q,
        k,
        v,
        out,
        AttentionBwd {
            g,
            mask: mask.cloned(),
        },
    )
}

/// The shapes of one sequence's grouped attention and the reshapes between the token
/// layout (`[tokens, heads, d]`) and the grouped one (`[hkv, groups * n, d]`).
#[derive(Clone, Copy)]
struct Grouped {
    n: usize,
    hq: usize,
    hkv: usize,
    d: usize,
}

impl Grouped {
    fn new(q: &Tensor, k: &Tensor) -> candle_core::Result<Self> {
        let (n, hq, d) = q.dims3()?;
        let (_, hkv, dk) = k.dims3()?;
        if dk != d || hkv == 0 || hq % hkv != 0 {
            candle_core::bail!(
                "attention: q {:?} and k {:?} do not group",
                q.dims(),
                k.dims()
            );
        }
        Ok(Self { n, hq, hkv, d })
    }

    fn scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }

    /// `[n, hq, d]` -> `[hkv, groups * n, d]`.
    fn queries(&self, q: &Tensor) -> candle_core::Result<Tensor> {
        q.transpose(0, 1)?
            .contiguous()?
            .reshape((self.hkv, self.hq / self.hkv * self.n, self.d))
    }

    /// `[total, hkv, d]` -> `[hkv, total, d]`.
    fn keys(&self, k: &Tensor) -> candle_core::Result<Tensor> {
        k.transpose(0, 1)?.contiguous()
    }

    /// `[hkv, groups * n, d]` -> `[n, hq * d]`.
    fn merge(&self, o: &Tensor) -> candle_core::Result<Tensor> {
        o.reshape((self.hq, self.n, self.d))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((self.n, self.hq * self.d))
    }

    /// `[n, hq * d]` -> `[hkv, groups * n, d]` (the inverse of [`Self::merge`]).
    fn split(&self, o: &Tensor) -> candle_core::Result<Tensor> {
        self.queries(&o.reshape((self.n, self.hq, self.d))?)
    }

    /// Probabilities `[hkv, groups * n, total]` in the inputs' dtype (f32 softmax).
    fn probs(
        &self,
        qg: &Tensor,
        kt: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mut s = (qg.matmul(&kt.t()?)? * self.scale())?;
        let total = kt.dim(1)?;
        if let Some(m) = mask {
            s = s
                .reshape((self.hkv, self.hq / self.hkv, self.n, total))?
                .broadcast_add(m)?
                .reshape((self.hkv, self.hq / self.hkv * self.n, total))?;
        }
        let dt = s.dtype();
        candle_nn::ops::softmax_last_dim(&s.to_dtype(DType::F32)?)?.to_dtype(dt)
    }
}

struct AttentionBwd {
    g: Grouped,
    mask: Option<Tensor>,
}

impl Backward3 for AttentionBwd {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        let (qg, kt, vt) = (g.queries(q)?, g.keys(k)?, g.keys(v)?);
        let p = g.probs(&qg, &kt, self.mask.as_ref())?;
        let dout = g.split(&gy.to_dtype(q.dtype())?)?;
        let o = g.split(out)?;
        // dV = Pᵀ dO; dP = dO Vᵀ; dS = P (dP - rowsum(dO · O)); dQ = dS K s; dK = dSᵀ Q s.
        let dv = p.t()?.matmul(&dout)?;
        let dp = dout.matmul(&vt.t()?)?;
        let delta = (&dout * &o)?.sum_keepdim(D::Minus1)?;
        let ds = (p * dp.broadcast_sub(&delta)?)?;
        let dq = (ds.matmul(&kt)? * g.scale())?;
        let dk = (ds.t()?.matmul(&qg)? * g.scale())?;
        let tokens = |x: Tensor| -> candle_core::Result<Tensor> { x.transpose(0, 1)?.contiguous() };
        let dq = dq
            .reshape((g.hq, g.n, g.d))?
            .transpose(0, 1)?
            .contiguous()?;
        Ok((Some(dq), Some(tokens(dk)?), Some(tokens(dv)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::Masks;
    use crate::autograd::testing::{check_gradients, Input};
    use crate::ops::Pass;
    use candle_core::{Device, Var};

    #[test]
    fn gradients_match_the_composed_attention() {
        let dev = Device::Cpu;
        let (n, hq, hkv, d) = (6, 4, 2, 8);
        let var = |seed, shape: (usize, usize, usize)| {
            Var::from_tensor(&crate::seeded_randn(seed, 0.0, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (var(1, (n, hq, d)), var(2, (n, hkv, d)), var(3, (n, hkv, d)));
        for window in [None, Some(3)] {
            let mask = Masks::new(DType::F32, &dev).get(n, 0, window).unwrap();
            check_gradients(
                &[
                    Input::new("q", &q),
                    Input::new("k", &k),
                    Input::new("v", &v),
                ],
                |t| attention(t[0], t[1], t[2], mask.as_ref()),
                |t| {
                    crate::attention::attend(t[0], t[1], t[2], mask.as_ref(), Pass::TRAIN)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                },
            );
        }
    }
}

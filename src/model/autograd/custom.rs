//! The mechanism of [`super`]: an output computed ahead handed to candle's custom ops
//! once, with a hand-written backward.

use std::sync::Mutex;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape};
use candle_core::{Storage, StorageRef, Tensor};

/// The backward of an op of one input: the gradient of `x` given the output `y` and
/// the output's gradient `gy` (`None` when `x` needs none).
pub(crate) trait Backward1: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn backward(&self, x: &Tensor, y: &Tensor, gy: &Tensor) -> candle_core::Result<Option<Tensor>>;
}

/// The backward of an op of two inputs.
pub(crate) trait Backward2: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)>;
}

/// The backward of an op of three inputs.
pub(crate) trait Backward3: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>;
}

/// An op whose output was computed ahead: candle's forward takes it (once), candle's
/// backward calls `bwd`.
struct Ahead<B> {
    out: Mutex<Option<Tensor>>,
    bwd: B,
}

impl<B> Ahead<B> {
    fn new(out: Tensor, bwd: B) -> Self {
        Self {
            out: Mutex::new(Some(out)),
            bwd,
        }
    }

    fn take(&self) -> candle_core::Result<Tensor> {
        self.out
            .lock()
            .map_err(|_| candle_core::Error::Msg("autograd op lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("autograd op forward ran twice".into()))
    }

    fn cpu(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (s, l) = t.storage_and_layout();
        match &*s {
            Storage::Cpu(c) => Ok((copy_out(c, l)?, l.shape().clone())),
            _ => candle_core::bail!("autograd op: output computed on another device"),
        }
    }

    fn cuda(&self) -> candle_core::Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (s, l) = t.storage_and_layout();
        match &*s {
            Storage::Cuda(c) => Ok((copy_out(c, l)?, l.shape().clone())),
            _ => candle_core::bail!("autograd op: output computed on another device"),
        }
    }
}

/// An input of an op as its backward sees it: detached, and whether it wants a
/// gradient (a frozen weight gets none).
struct Input {
    t: Tensor,
    wanted: bool,
}

impl Input {
    fn of(t: &Tensor) -> Self {
        Self {
            t: t.detach(),
            wanted: t.track_op(),
        }
    }

    fn want(&self, g: Option<Tensor>) -> Option<Tensor> {
        g.filter(|_| self.wanted)
    }
}

/// A contiguous copy of the elements `layout` describes.
fn copy_out<S>(src: &S, layout: &Layout) -> candle_core::Result<S>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    // SAFETY: every element is written by the strided copy right after.
    let mut dst = unsafe { src.device().alloc_uninit(layout.shape(), src.dtype())? };
    src.copy_strided_src(&mut dst, 0, layout)?;
    Ok(dst)
}

impl<B: Backward1> CustomOp1 for Ahead<B> {
    fn name(&self) -> &'static str {
        self.bwd.name()
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    fn bwd(&self, x: &Tensor, y: &Tensor, gy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // Detached: gradients built from the graph's tensors would otherwise carry the
        // whole forward graph along (into the optimizer's moments, step after step).
        self.bwd.backward(&x.detach(), &y.detach(), &gy.detach())
    }
}

impl<B: Backward2> CustomOp2 for Ahead<B> {
    fn name(&self) -> &'static str {
        self.bwd.name()
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b) = (Input::of(a), Input::of(b));
        let (ga, gb) = self.bwd.backward(&a.t, &b.t, &y.detach(), &gy.detach())?;
        Ok((a.want(ga), b.want(gb)))
    }
}

impl<B: Backward3> CustomOp3 for Ahead<B> {
    fn name(&self) -> &'static str {
        self.bwd.name()
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu()
    }
    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.cuda()
    }
    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, c) = (Input::of(a), Input::of(b), Input::of(c));
        let (ga, gb, gc) = self
            .bwd
            .backward(&a.t, &b.t, &c.t, &y.detach(), &gy.detach())?;
        Ok((a.want(ga), b.want(gb), c.want(gc)))
    }
}

/// `y` (computed from `x` without a graph) as a node whose backward is `bwd`; `y`
/// itself when `x` needs no gradient.
pub(crate) fn attach1(x: &Tensor, y: Tensor, bwd: impl Backward1) -> candle_core::Result<Tensor> {
    if !x.track_op() {
        return Ok(y);
    }
    x.apply_op1(Ahead::new(y, bwd))
}

/// [`attach1`] even when nothing of `x`'s past is trained (the op's backward reaches
/// weights of its own, as a checkpointed layer does); `x` must still take part in the
/// graph for candle to call it.
pub(crate) fn attach_always(
    x: &Tensor,
    y: Tensor,
    bwd: impl Backward1,
) -> candle_core::Result<Tensor> {
    x.apply_op1(Ahead::new(y, bwd))
}

/// [`attach1`] for two inputs.
pub(crate) fn attach2(
    a: &Tensor,
    b: &Tensor,
    y: Tensor,
    bwd: impl Backward2,
) -> candle_core::Result<Tensor> {
    if !a.track_op() && !b.track_op() {
        return Ok(y);
    }
    a.apply_op2(b, Ahead::new(y, bwd))
}

/// [`attach1`] for three inputs.
pub(crate) fn attach3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    y: Tensor,
    bwd: impl Backward3,
) -> candle_core::Result<Tensor> {
    if !a.track_op() && !b.track_op() && !c.track_op() {
        return Ok(y);
    }
    a.apply_op3(b, c, Ahead::new(y, bwd))
}

/// The f32 elements of a contiguous CPU tensor, read in place: the tensor's storage
/// stays read-locked while the view lives (the backward loops read logits and
/// activations of hundreds of megabytes; a copy of each would cost its pages too).
pub(crate) struct F32View<'a> {
    guard: StorageRef<'a>,
    span: std::ops::Range<usize>,
}

impl std::ops::Deref for F32View<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.span.clone()],
            // `cpu_f32` only builds views of f32 CPU storage, and the lock keeps it so.
            _ => &[],
        }
    }
}

/// The f32 elements of a tensor on the CPU, row-major, for the CPU backward loops;
/// `None` on another device or dtype, or for a strided layout (the tensor-op form runs
/// there).
pub(crate) fn cpu_f32(t: &Tensor) -> candle_core::Result<Option<F32View<'_>>> {
    if !t.device().is_cpu() || t.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    let (guard, layout) = t.storage_and_layout();
    let span = match (layout.contiguous_offsets(), &*guard) {
        (Some((a, b)), Storage::Cpu(CpuStorage::F32(v))) if b <= v.len() => a..b,
        _ => return Ok(None),
    };
    Ok(Some(F32View { guard, span }))
}

//! Launches of the fused kernels (kernels.cu, PTX from build.rs) on candle's CUDA storage.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout, Shape, WithDType};
use half::{bf16, f16};

use super::CausalSoftmax;

/// A tensor's CUDA storage and its layout.
pub type Arg<'a> = (&'a CudaStorage, &'a Layout);

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "self_judge_fused";

fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => candle_core::bail!("fused kernels: unsupported dtype {other:?}"),
    })
}

fn cuda_err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// [`super::causal_softmax`]: one warp per row, eight rows per block.
pub fn causal_softmax(
    op: &CausalSoftmax,
    s: &CudaStorage,
    l: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr + WithDType>(
        op: &CausalSoftmax,
        s: &CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let span = super::span(l, "causal-softmax")?;
        let dev = &s.device;
        let total = op.past + op.n;
        let rows = span.len() / total;
        let mut y = unsafe { dev.alloc::<T>(span.len()) }?;
        let x = s.as_cuda_slice::<T>()?.slice(span);
        let name = format!("causal_softmax_{}", suffix(T::DTYPE)?);
        let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        // One warp per row, eight rows per block.
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let dims = [rows, op.n, total, op.past, op.window].map(|v| v as u32);
        let mut lb = f.builder();
        lb.arg(&x).arg(&mut y);
        for d in &dims {
            lb.arg(d);
        }
        lb.arg(&op.scale);
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
    let out = match s.dtype() {
        DType::F32 => run::<f32>(op, s, l)?,
        DType::BF16 => run::<bf16>(op, s, l)?,
        DType::F16 => run::<f16>(op, s, l)?,
        other => candle_core::bail!("causal-softmax: unsupported dtype {other:?}"),
    };
    Ok((out, l.shape().clone()))
}

/// [`super::silu_mul`]: 16-byte vectors per thread where the pointers allow.
pub fn silu_mul(
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr + WithDType>(
        g: &CudaStorage,
        gl: &Layout,
        u: &CudaStorage,
        ul: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let (gspan, uspan) = (super::span(gl, "silu-mul")?, super::span(ul, "silu-mul")?);
        let dev = &g.device;
        let numel = gspan.len();
        let gs = g.as_cuda_slice::<T>()?.slice(gspan);
        let us = u.as_cuda_slice::<T>()?.slice(uspan);
        let mut o = unsafe { dev.alloc::<T>(numel) }?;
        let name = format!("silu_mul_{}", suffix(T::DTYPE)?);
        let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        // 16-byte vectors per thread; the kernel strides over what the grid leaves.
        let per = 16 / T::DTYPE.size_in_bytes();
        let blocks = numel.div_ceil(per * 256).clamp(1, 65_535 * 16);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut lb = f.builder();
        lb.arg(&gs).arg(&us).arg(&mut o).arg(&numel);
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
        Ok(CudaStorage::wrap_cuda_slice(o, dev.clone()))
    }
    // Shapes and dtypes were checked by the op (`SiluMul::check`).
    let out = match g.dtype() {
        DType::F32 => run::<f32>(g, gl, u, ul)?,
        DType::BF16 => run::<bf16>(g, gl, u, ul)?,
        DType::F16 => run::<f16>(g, gl, u, ul)?,
        other => candle_core::bail!("silu-mul: unsupported dtype {other:?}"),
    };
    Ok((out, gl.shape().clone()))
}

/// [`super::add_rms_norm`]: one block per row; returns `[r; h]` as `[2, rows, cols]`.
pub fn add_rms_norm(
    eps: f32,
    x: Arg,
    y: Arg,
    w: Arg,
    (rows, cols): (usize, usize),
) -> candle_core::Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr + WithDType>(
        eps: f32,
        (x, xl): Arg,
        (y, yl): Arg,
        (w, wl): Arg,
        (rows, cols): (usize, usize),
    ) -> candle_core::Result<CudaStorage> {
        let op = "add-rms-norm";
        let (xspan, yspan, wspan) = (
            super::span(xl, op)?,
            super::span(yl, op)?,
            super::span(wl, op)?,
        );
        let dev = &x.device;
        let xs = x.as_cuda_slice::<T>()?.slice(xspan);
        let ys = y.as_cuda_slice::<T>()?.slice(yspan);
        let ws = w.as_cuda_slice::<T>()?.slice(wspan);
        let mut out = unsafe { dev.alloc::<T>(2 * rows * cols) }?;
        let name = format!("add_rms_norm_{}", suffix(T::DTYPE)?);
        let f = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        // One block per row.
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (r, c) = (rows as u32, cols as u32);
        let mut lb = f.builder();
        lb.arg(&xs)
            .arg(&ys)
            .arg(&ws)
            .arg(&mut out)
            .arg(&r)
            .arg(&c)
            .arg(&eps);
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
    // One dtype for all three was checked by the op.
    let shape = (rows, cols);
    let out = match x.0.dtype() {
        DType::F32 => run::<f32>(eps, x, y, w, shape)?,
        DType::BF16 => run::<bf16>(eps, x, y, w, shape)?,
        DType::F16 => run::<f16>(eps, x, y, w, shape)?,
        other => candle_core::bail!("add-rms-norm: unsupported dtype {other:?}"),
    };
    Ok((out, Shape::from((2, rows, cols))))
}

/// [`super::swap12`]: whole rows in 16-byte pieces where they divide evenly.
pub fn swap12(s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + DeviceRepr + WithDType>(
        s: &CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let span = super::span(l, "swap12")?;
        let (a, b, c, d) = l.shape().dims4()?;
        let dev = &s.device;
        let n = span.len();
        let x = s.as_cuda_slice::<T>()?.slice(span);
        let mut y = unsafe { dev.alloc::<T>(n) }?;
        // The kernel moves raw elements: by size, not by float type.
        let name = match T::DTYPE.size_in_bytes() {
            2 => "swap12_u16",
            4 => "swap12_u32",
            n => candle_core::bail!("swap12: {n}-byte elements"),
        };
        let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let pieces = n * T::DTYPE.size_in_bytes() / 16;
        let cfg = LaunchConfig {
            grid_dim: (pieces.div_ceil(256).clamp(1, 65_535 * 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let dims = [a, b, c, d].map(|v| v as u32);
        let mut lb = f.builder();
        lb.arg(&x).arg(&mut y);
        for v in &dims {
            lb.arg(v);
        }
        unsafe { lb.launch(cfg) }.map_err(cuda_err)?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
    let (a, b, c, d) = l.shape().dims4()?;
    let out = match s.dtype() {
        DType::F32 => run::<f32>(s, l)?,
        DType::BF16 => run::<bf16>(s, l)?,
        DType::F16 => run::<f16>(s, l)?,
        other => candle_core::bail!("swap12: unsupported dtype {other:?}"),
    };
    Ok((out, Shape::from((a, c, b, d))))
}

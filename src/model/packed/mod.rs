//! `x Wᵀ` on the CPU against a weight packed once, at load, for the register kernel.
//!
//! A general GEMM (candle's) copies the weight into panels on every call. For serving
//! the weights never change, so they are packed once: panels of [`NR`] output columns,
//! each panel `k`-major, so that one aligned 64-byte line holds the sixteen weights a
//! step of the kernel multiplies by one input value. A decode step then reads every
//! weight once from memory (no copy per call), and a prefill reuses each panel from
//! the L1 cache for all rows of a block of `x` (which itself stays in L2).
//!
//! The kernel keeps a [`MR`] x [`NR`] block of the output in twelve AVX2 registers and
//! does twelve fused multiply-adds per two loads of the weight; without AVX2/FMA the
//! same blocking runs as plain loops. Each output is summed over `k` in order (per
//! block of [`KC`]) by exactly one task, so results do not depend on the thread count.

mod kernel;

use rayon::prelude::*;

/// Output columns per panel: two AVX2 registers.
pub const NR: usize = 16;
/// Rows of `x` per register block.
const MR: usize = 6;
/// Depth of one pass over a panel: a `KC x NR` slice of it is 16 KiB, inside L1.
const KC: usize = 256;
/// Rows of `x` per task when there are many (a `MC x KC` block is 72 KiB, inside L2).
const MC: usize = 72;

/// One cache line of a panel: the sixteen weights of one input position.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; NR]);

/// A `[out, in]` f32 weight in panels for [`PackedWeight::matmul_t`].
pub struct PackedWeight {
    out: usize,
    inp: usize,
    /// `lines[p * inp + k].0[j]` is `W[p * NR + j][k]` (zero past `out`).
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight[{}, {}]", self.out, self.inp)
    }
}

/// A raw output pointer shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own output columns or rows only (see `matmul_t`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl PackedWeight {
    /// Packs a row-major `[out, in]` weight.
    ///
    /// # Panics
    /// When `w` does not hold `out * inp` values (a caller's bug, not user input).
    pub fn pack(w: &[f32], out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp, "weight of {out} x {inp}");
        let panels = out.div_ceil(NR);
        let mut lines = vec![Line([0.0; NR]); panels * inp];
        if inp > 0 {
            lines
                .par_chunks_mut(inp)
                .enumerate()
                .for_each(|(p, panel)| {
                    for j in 0..NR.min(out - p * NR) {
                        let row = &w[(p * NR + j) * inp..][..inp];
                        for (line, &v) in panel.iter_mut().zip(row) {
                            line.0[j] = v;
                        }
                    }
                });
        }
        Self { out, inp, lines }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Bytes the panels hold (the padding of the last panel included).
    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// The weight back in `[out, in]` row-major order.
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.out * self.inp];
        for (o, row) in w.chunks_mut(self.inp.max(1)).enumerate().take(self.out) {
            let (p, j) = (o / NR, o % NR);
            for (k, v) in row.iter_mut().enumerate() {
                *v = self.lines[p * self.inp + k].0[j];
            }
        }
        w
    }

    /// `y = x Wᵀ` for `x` `[m, in]` row-major into `y` `[m, out]`.
    ///
    /// # Panics
    /// When the slices do not hold `m` rows of the weight's sizes.
    pub fn matmul_t(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.matmul_t_using(kernel::Kernel::detect(), x, m, y)
    }

    fn matmul_t_using(&self, kernel: kernel::Kernel, x: &[f32], m: usize, y: &mut [f32]) {
        assert_eq!(x.len(), m * self.inp, "{m} rows of {}", self.inp);
        assert_eq!(y.len(), m * self.out, "{m} rows of {}", self.out);
        if m == 0 || self.out == 0 {
            return;
        }
        if self.inp == 0 {
            y.fill(0.0);
            return;
        }
        let panels = self.out.div_ceil(NR);
        if m >= 2 * MC {
            // Many rows: each task a block of rows against every panel, so the block
            // stays in its core's L2 while the panels stream past.
            y.par_chunks_mut(MC * self.out)
                .zip(x.par_chunks(MC * self.inp))
                .for_each(|(yb, xb)| {
                    let rows = xb.len() / self.inp;
                    // SAFETY: `yb` and `xb` hold `rows` rows; panels in range.
                    unsafe { self.block(kernel, xb, rows, 0..panels, Out(yb.as_mut_ptr())) };
                });
        } else {
            // Few rows (a decode step): tasks split the panels, every task all rows;
            // each weight line is read from memory once.
            let tasks = (rayon::current_num_threads() * 4).max(1);
            let per = panels.div_ceil(tasks).max(1);
            let out = Out(y.as_mut_ptr());
            (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
                let range = t * per..((t + 1) * per).min(panels);
                // SAFETY: tasks write disjoint panels' columns of `y`, which holds
                // `m` rows of `out`.
                unsafe { self.block(kernel, x, m, range, out) };
            });
        }
    }

    /// `y[rows, panels' columns] = x[rows] Wᵀ` by register blocks, `KC` at a time.
    ///
    /// # Safety
    /// `x` holds `rows` rows of `inp`; `y` points at `rows` rows of `out`; no other task
    /// writes the same columns of these rows.
    unsafe fn block(
        &self,
        kernel: kernel::Kernel,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        y: Out,
    ) {
        let (inp, out) = (self.inp, self.out);
        let mut k0 = 0;
        while k0 < inp {
            let kc = KC.min(inp - k0);
            for p in panels.clone() {
                let b = self.lines[p * inp + k0..].as_ptr() as *const f32;
                let cols = NR.min(out - p * NR);
                let mut r = 0;
                while r < rows {
                    let mr = MR.min(rows - r);
                    let tile = kernel::Tile {
                        kc,
                        a: x.as_ptr().add(r * inp + k0),
                        lda: inp,
                        b,
                        c: y.0.add(r * out + p * NR),
                        ldc: out,
                        cols,
                        accumulate: k0 > 0,
                    };
                    kernel.run(mr, &tile);
                    r += mr;
                }
            }
            k0 += kc;
        }
    }
}

#[cfg(test)]
mod tests;

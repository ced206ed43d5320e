//! The register kernels of [`super::PackedWeight::matmul_t`]: one `mr x NR` block of
//! the output over `kc` steps of one panel. AVX2 + FMA where the CPU has them, plain
//! loops otherwise (the tests hold the two to each other).

use super::NR;

/// One register block: `C[mr, cols] (+)= A[mr, kc] B[kc, NR]` where `B` is a panel's
/// lines (`NR` floats each, 64-byte aligned) and `A`, `C` are row-major with leading
/// dimensions `lda`, `ldc`.
pub(super) struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    /// Columns of `C` to write (`NR`, or fewer in the last panel).
    pub cols: usize,
    /// Add to `C` (a later block of `k`) instead of overwriting it.
    pub accumulate: bool,
}

/// Which kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// Runs the `mr`-row block (`1..=6`).
    ///
    /// # Safety
    /// The tile's pointers cover `mr` rows of `kc` (A), `kc` lines (B) and `mr` rows of
    /// `cols` (C); `Avx2` only where the CPU has AVX2 and FMA.
    pub unsafe fn run(self, mr: usize, t: &Tile) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => match mr {
                1 => avx2::tile::<1>(t),
                2 => avx2::tile::<2>(t),
                3 => avx2::tile::<3>(t),
                4 => avx2::tile::<4>(t),
                5 => avx2::tile::<5>(t),
                _ => avx2::tile::<6>(t),
            },
            Self::Portable => match mr {
                1 => portable::<1>(t),
                2 => portable::<2>(t),
                3 => portable::<3>(t),
                4 => portable::<4>(t),
                5 => portable::<5>(t),
                _ => portable::<6>(t),
            },
        }
    }
}

/// Writes (or adds) the `R x NR` accumulator to `C`'s first `cols` columns.
///
/// # Safety
/// As [`Kernel::run`].
unsafe fn store<const R: usize>(acc: &[[f32; NR]; R], t: &Tile) {
    for (r, row) in acc.iter().enumerate() {
        let c = std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), t.cols);
        if t.accumulate {
            c.iter_mut().zip(row).for_each(|(c, v)| *c += v);
        } else {
            c.copy_from_slice(&row[..t.cols]);
        }
    }
}

/// The kernel as loops (any CPU).
///
/// # Safety
/// As [`Kernel::run`].
unsafe fn portable<const R: usize>(t: &Tile) {
    let mut acc = [[0f32; NR]; R];
    for k in 0..t.kc {
        let b = std::slice::from_raw_parts(t.b.add(k * NR), NR);
        for (r, row) in acc.iter_mut().enumerate() {
            let a = *t.a.add(r * t.lda + k);
            row.iter_mut()
                .zip(b)
                .for_each(|(c, b)| *c = a.mul_add(*b, *c));
        }
    }
    store(&acc, t);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Tile, NR};

    /// Lines ahead to prefetch.
    const PREFETCH: usize = 32;

    /// `R` rows x 16 columns in `2R` registers; each step loads the panel's line once
    /// (two aligned loads) and broadcasts one value of each row of `A`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const R: usize>(t: &Tile) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        let (a, b, lda) = (t.a, t.b, t.lda);
        for k in 0..t.kc {
            // The line a few steps ahead: a decode step streams the panels from memory
            // once, and the loads must not wait on it.
            _mm_prefetch::<_MM_HINT_T0>(b.add((k + PREFETCH) * NR) as *const i8);
            let b0 = _mm256_load_ps(b.add(k * NR));
            let b1 = _mm256_load_ps(b.add(k * NR + 8));
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + k));
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        }
        if t.cols == NR {
            for r in 0..R {
                let c = t.c.add(r * t.ldc);
                let (mut v0, mut v1) = (lo[r], hi[r]);
                if t.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
                }
                _mm256_storeu_ps(c, v0);
                _mm256_storeu_ps(c.add(8), v1);
            }
        } else {
            let mut acc = [[0f32; NR]; R];
            for r in 0..R {
                _mm256_storeu_ps(acc[r].as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), hi[r]);
            }
            super::store(&acc, t);
        }
    }
}

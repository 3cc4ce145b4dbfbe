//! The one place that calls the `gemm` crate: `dst = lhs * rhs` (or `dst += lhs * rhs`) on
//! strided f32 matrices. Strides let kernels read heads, transposes and image rows in place.

use gemm::Parallelism;
use rayon::prelude::*;

/// A strided matrix: element (i, j) lives at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub struct MatRef {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

#[derive(Clone, Copy)]
pub struct MatMut {
    pub ptr: *mut f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]`; `accumulate` keeps what `dst` holds (a pre-filled
/// bias, for instance). `threads > 1` lets gemm split the product itself.
///
/// # Safety
/// Every element the three views address for the given sizes must be in bounds of live
/// allocations, and nothing else may access the `dst` elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, accumulate: bool, threads: usize) {
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.col_stride,
        dst.row_stride,
        accumulate,
        lhs.ptr,
        lhs.col_stride,
        lhs.row_stride,
        rhs.ptr,
        rhs.col_stride,
        rhs.row_stride,
        // dst = alpha * dst + beta * lhs * rhs
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// [`gemm_f32`] split by hand over `threads` rayon tasks, each a single-threaded gemm on its own
/// band of rows (or of columns, when there are more columns than rows).
///
/// gemm's own `Parallelism::Rayon` splits the product more finely and synchronises its threads
/// inside the call; for the tall products of linear layers one band per thread, each packing
/// the shared operand once, measured faster (BENCHMARKS.md).
///
/// # Safety
/// As for [`gemm_f32`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32_banded(m: usize, n: usize, k: usize, dst: MatMut, lhs: MatRef, rhs: MatRef, accumulate: bool, threads: usize) {
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    let bands = threads.min(len.div_ceil(MIN_BAND)).max(1);
    if bands <= 1 {
        return gemm_f32(m, n, k, dst, lhs, rhs, accumulate, threads);
    }
    let band = len.div_ceil(bands);
    // Raw pointers as addresses so the closure is Send; each band writes disjoint dst elements.
    let (d, l, r) = (dst.ptr as usize, lhs.ptr as usize, rhs.ptr as usize);
    (0..bands).into_par_iter().for_each(|b| {
        let start = b * band;
        let size = band.min(len - start);
        let offset = |stride: isize| stride * start as isize;
        let dst = MatMut { ptr: (d as *mut f32).offset(offset(if by_rows { dst.row_stride } else { dst.col_stride })), ..dst };
        let (lhs, rhs) = if by_rows {
            (MatRef { ptr: (l as *const f32).offset(offset(lhs.row_stride)), ..lhs }, MatRef { ptr: r as *const f32, ..rhs })
        } else {
            (MatRef { ptr: l as *const f32, ..lhs }, MatRef { ptr: (r as *const f32).offset(offset(rhs.col_stride)), ..rhs })
        };
        let (bm, bn) = if by_rows { (size, n) } else { (m, size) };
        gemm_f32(bm, bn, k, dst, lhs, rhs, accumulate, 1);
    });
}

/// Smallest band worth its own task.
const MIN_BAND: usize = 64;

//! The one place that calls the `gemm` crate: `dst = lhs * rhs` (or `dst += lhs * rhs`) on
//! strided f32 matrices. Strides let kernels read heads, transposes and image rows in place.

use gemm::Parallelism;

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

//! CPU kernels for the hot operations of the SD networks (f32, contiguous tensors).
//!
//! Stock candle spends most of a UNet step in its scalar im2col, in materialised attention
//! scores, and in multi-pass elementwise chains (see BENCHMARKS.md). Each kernel here replaces
//! one of those on the CPU and keeps candle's own ops for every other device and dtype, so
//! CUDA/Metal and f16/f64 runs are untouched. Every kernel has a unit test against the plain
//! candle op.

pub mod allocator;
pub mod attention;
pub mod conv2d;
mod cpu_tensor;
pub mod geglu;
mod gemm_call;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod profile;
pub mod simd;
mod vmath;
mod winograd;

pub use simd::{log_cpu_kernels, simd_level, SimdLevel};

#[cfg(test)]
mod test_util;

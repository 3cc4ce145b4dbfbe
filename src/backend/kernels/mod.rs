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

/// Returns the memory the CPU kernels hold between calls: every thread's reused scratch
/// buffers, then the heap's free pages (`malloc_trim`). For phase changes whose large buffers
/// cannot reuse what the previous phase freed, because they are above glibc's 32 MiB mmap
/// threshold and get fresh mappings: each of the VAE decoder's up blocks (128-256 MiB
/// activations at 512x512), the first of them right after sampling. Without it a 512x512 job's
/// peak RSS carried ~250 MiB of freed, unusable heap. Costs a few milliseconds; the scratch regrows on next use.
pub fn release_free_memory() {
    allocator::trimming_eagerly(|| {
        let release_thread = || {
            attention::release_thread_scratch();
            conv2d::release_thread_scratch();
            winograd::release_thread_scratch();
            allocator::trim_thread_arena();
        };
        rayon::broadcast(|_| release_thread());
        release_thread();
        allocator::trim_heap();
    });
}

#[cfg(test)]
mod test_util;

#[cfg(test)]
mod release_tests {
    use super::conv2d::{conv2d, Padding, Residual};
    use super::test_util::seeded;

    #[test]
    fn kernels_regrow_their_scratch_after_a_release() {
        // Winograd (40x40, 3x3) and im2col (stride 2) both keep per-thread scratch.
        let x = seeded(&[1, 8, 40, 40], 1, 2.0);
        let weight = seeded(&[8, 8, 3, 3], 2, 0.3);
        let run = || [1, 2].map(|stride| conv2d(&x, &weight, None, stride, Padding::same(1), Residual::None).unwrap());
        let before = run();
        super::release_free_memory();
        let after = run();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
}

//! The SIMD level of this CPU, detected once at run time, and the dispatch macro that compiles a
//! kernel body once per level so plain Rust loops get AVX-512 / AVX2 code with a portable
//! fallback (no `-C target-cpu` needed, one binary for every x86-64 host).

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 F/VL/DQ/BW with FMA (x86-64-v4).
    Avx512,
    /// AVX2 with FMA (x86-64-v3).
    Avx2Fma,
    /// Whatever the compilation target guarantees.
    Baseline,
}

impl SimdLevel {
    pub fn label(self) -> &'static str {
        match self {
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx2Fma => "avx2+fma",
            SimdLevel::Baseline => "baseline",
        }
    }
}

fn detect() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let v4 = v3
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512bw");
        if v4 {
            return SimdLevel::Avx512;
        }
        if v3 {
            return SimdLevel::Avx2Fma;
        }
    }
    SimdLevel::Baseline
}

/// The level the kernels dispatch to (detected on first use).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

/// Logs what the CPU kernels will run with, so a slow deployment on an AVX2-only host (or one
/// with a single rayon thread) is visible in the start-up log.
pub fn log_cpu_kernels() {
    tracing::info!(
        simd = simd_level().label(),
        threads = rayon::current_num_threads(),
        "CPU kernels: gemm built with x86-v4 (AVX-512) microkernels, runtime-dispatched"
    );
}

/// `simd_dispatch!(fn name<const N: usize>(args) -> ret = body_fn;)` (const generics optional)
/// defines `name`, which calls the
/// `#[inline(always)]` function `body_fn` compiled for AVX-512, for AVX2+FMA, or for the
/// baseline target, whichever [`simd_level`] picked. The body stays ordinary safe Rust; LLVM
/// vectorises it for the enabled features.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$(const $g:ident : $gty:ty),+ $(,)?>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$meta])*
        $vis fn $name $(<$(const $g: $gty),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512 $(<$(const $g: $gty),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body $(::<$($g),+>)? ($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2 $(<$(const $g: $gty),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body $(::<$($g),+>)? ($($arg),*)
                }
                match $crate::backend::kernels::simd::simd_level() {
                    // SAFETY: the level was detected on this CPU, so the features are present.
                    $crate::backend::kernels::simd::SimdLevel::Avx512 => return unsafe { avx512 $(::<$($g),+>)? ($($arg),*) },
                    $crate::backend::kernels::simd::SimdLevel::Avx2Fma => return unsafe { avx2 $(::<$($g),+>)? ($($arg),*) },
                    $crate::backend::kernels::simd::SimdLevel::Baseline => {}
                }
            }
            $body $(::<$($g),+>)? ($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_stable_and_labelled() {
        assert_eq!(simd_level(), simd_level());
        assert!(!simd_level().label().is_empty());
    }
}

//! torch's CPU generator: `torch.Generator("cpu").manual_seed(seed)` followed by float32
//! `torch.randn` calls, reproduced bit for bit (what diffusers and ComfyUI draw their noise from).
//!
//! torch draws a float32 normal tensor in one of two ways, depending on its element count:
//!
//! * `n >= 16` (`normal_fill`): one 24-bit uniform per element, then Box-Muller in place on
//!   blocks of 16 (pairs `j`, `j + 8`). When `n` is not a multiple of 16, 16 fresh uniforms are
//!   drawn for one more block that overwrites the last 16 outputs, so `n + 16` words are used.
//! * `n < 16`: one float64 Box-Muller per element whose spare value is cached in the generator
//!   and handed out by the next small draw.

use super::cephes;
use super::mt19937::Mt19937;
use super::NoiseGenerator;

/// Elements per Box-Muller block of torch's `normal_fill`.
const BLOCK: usize = 16;
const HALF_BLOCK: usize = BLOCK / 2;

/// Which `ln`/`sin`/`cos` torch's `normal_fill` runs with; this depends on the CPU torch ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TorchMath {
    /// AVX2 / AVX-512 CPUs (every current PC and server): float32 Cephes polynomials with FMA.
    #[default]
    Avx,
    /// `ATEN_CPU_CAPABILITY=default` or CPUs without AVX2: libm `logf`/`cosf`/`sinf`.
    Libm,
}

/// torch's CPU generator state plus the float64 normal it keeps for the next small draw.
#[derive(Clone)]
pub struct TorchCpuGenerator {
    engine: Mt19937,
    math: TorchMath,
    cached_normal: Option<f64>,
}

impl TorchCpuGenerator {
    /// `manual_seed(seed)` on an AVX2-class CPU.
    pub fn new(seed: u64) -> Self {
        Self::with_math(seed, TorchMath::Avx)
    }

    pub fn with_math(seed: u64, math: TorchMath) -> Self {
        Self {
            engine: Mt19937::new(seed),
            math,
            cached_normal: None,
        }
    }

    /// `uniform_real_distribution<float>(0, 1)`: the low 24 bits scaled into [0, 1), exact in f32.
    #[inline]
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 bits of `random64()` scaled into [0, 1).
    #[inline]
    fn uniform_f64(&mut self) -> f64 {
        const MANTISSA: u64 = (1 << 53) - 1;
        (self.engine.next_u64() & MANTISSA) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>(0, 1)` with torch's one-value cache.
    fn normal_f64(&mut self) -> f64 {
        // `+ 0.0` is torch's `value * std + mean` with mean 0: it turns -0.0 into +0.0.
        if let Some(cached) = self.cached_normal.take() {
            return cached + 0.0;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let radius = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(radius * theta.sin());
        radius * theta.cos() + 0.0
    }

    fn fill_normal(&mut self, out: &mut [f32]) {
        for value in out.iter_mut() {
            *value = self.uniform_f32();
        }
        let whole_blocks = out.len() / BLOCK * BLOCK;
        box_muller_blocks(&mut out[..whole_blocks], self.math);
        if whole_blocks != out.len() {
            let tail_start = out.len() - BLOCK;
            let tail = &mut out[tail_start..];
            for value in tail.iter_mut() {
                *value = self.uniform_f32();
            }
            box_muller_blocks(tail, self.math);
        }
    }
}

impl NoiseGenerator for TorchCpuGenerator {
    fn randn(&mut self, n: usize) -> Vec<f32> {
        if n >= BLOCK {
            let mut out = vec![0.0f32; n];
            self.fill_normal(&mut out);
            out
        } else {
            (0..n).map(|_| self.normal_f64() as f32).collect()
        }
    }
}

/// Box-Muller on every 16-element block of `data` (its length is a multiple of 16).
fn box_muller_blocks(data: &mut [f32], math: TorchMath) {
    match math {
        TorchMath::Avx => cephes_blocks(data),
        TorchMath::Libm => {
            for block in data.chunks_exact_mut(BLOCK) {
                libm_block(block);
            }
        }
    }
}

fn cephes_blocks(data: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for (checked above).
        unsafe { cephes_blocks_fma(data) };
        return;
    }
    for block in data.chunks_exact_mut(BLOCK) {
        cephes_block(block);
    }
}

/// The same computation compiled with hardware FMA: `mul_add` is fused either way, so results
/// are identical; without the feature each `mul_add` is a slow software call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn cephes_blocks_fma(data: &mut [f32]) {
    for block in data.chunks_exact_mut(BLOCK) {
        cephes_block(block);
    }
}

/// `normal_fill_16_AVX2`: float32 throughout, with the Cephes polynomials.
#[inline(always)]
fn cephes_block(block: &mut [f32]) {
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2*pi rounded to f32.
    const TWO_PI: f32 = std::f32::consts::TAU;
    let (first, second) = block.split_at_mut(HALF_BLOCK);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let radius = (-2.0 * cephes::log(1.0 - *a)).sqrt();
        let (sin, cos) = cephes::sincos(TWO_PI * *b);
        // torch stores `fma(n, std, mean)` with std 1 and mean 0, i.e. `n + 0.0`.
        *a = radius * cos + 0.0;
        *b = radius * sin + 0.0;
    }
}

/// torch's scalar `normal_fill_16`: float32 libm functions, but theta is formed in double
/// (`2.0f * c10::pi<double> * u2`) and then rounded to float.
fn libm_block(block: &mut [f32]) {
    let (first, second) = block.split_at_mut(HALF_BLOCK);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let radius = (-2.0 * (1.0 - *a).ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * f64::from(*b)) as f32;
        *a = radius * theta.cos() + 0.0;
        *b = radius * theta.sin() + 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_draw_consumes_one_word_per_element_plus_a_tail_block() {
        let mut drawn = TorchCpuGenerator::new(7);
        drawn.randn(40);
        let mut reference = Mt19937::new(7);
        for _ in 0..(40 + BLOCK) {
            reference.next_u32();
        }
        assert_eq!(drawn.engine.next_u32(), reference.next_u32());
    }

    #[test]
    fn small_draws_share_the_cached_value() {
        let mut one_call = TorchCpuGenerator::new(3);
        let joined = one_call.randn(3);
        let mut two_calls = TorchCpuGenerator::new(3);
        let mut split = two_calls.randn(1);
        split.extend(two_calls.randn(2));
        assert_eq!(joined, split);
    }
}

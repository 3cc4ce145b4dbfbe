//! Branch-free f32 `exp`, SiLU and erf-GELU that LLVM vectorises inside the `simd_dispatch!`
//! kernels (libm's `expf`/`erff` are calls, which keep the loops scalar).

/// exp(x) with Cephes' degree-6 polynomial on the reduced argument: within 2 ulp of `expf`
/// over the clamped range. Inputs below -87.3 give ~1e-38 instead of a denormal or 0, which
/// keeps the loop free of branches and is negligible for softmax and SiLU; above 88.3 the result
/// saturates at exp(88.3) ~ 2e38 (still finite).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n through the exponent bits; n is in [-126, 128) after the clamp. The biased exponent
    // n + 127 is read from the low mantissa bits of n + 127 + 1.5 * 2^23 (exact: an integer
    // below 2^24) rather than by `as i32`, whose saturating conversion LLVM keeps scalar and
    // which would leave the whole loop unvectorised.
    const MAGIC: f32 = 12_582_912.0;
    let biased = (n + (127.0 + MAGIC)).to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(biased << 23);
    y * scale
}

/// x * sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// erf(x) by Abramowitz & Stegun 7.1.26, the formula PyTorch's vectorised CPU `erf` uses, so
/// GELU here rounds like diffusers' on CPU (absolute error below 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let mut r = A5.mul_add(t, A4);
    r = r.mul_add(t, A3);
    r = r.mul_add(t, A2);
    r = r.mul_add(t, A1);
    let y = 1.0 - r * t * exp(-a * a);
    y.copysign(x)
}

/// The exact (erf) GELU: `0.5 x (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_within_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.3 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1.3e-38 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn silu_and_gelu_match_the_f64_formulas() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let xd = x as f64;
            let silu_ref = xd / (1.0 + (-xd).exp());
            assert!((silu(x) as f64 - silu_ref).abs() <= 1e-6 * (1.0 + silu_ref.abs()), "silu({x})");
            if x.abs() > 6.0 {
                x += 0.013;
                continue;
            }
            let gelu_ref = 0.5 * xd * (1.0 + erf_f64(xd / 2f64.sqrt()));
            assert!((gelu_erf(x) as f64 - gelu_ref).abs() <= 2e-6 * (1.0 + gelu_ref.abs()), "gelu({x})");
            x += 0.013;
        }
    }

    /// erf by its Taylor series, for the test only: accurate to ~1e-8 for |x| <= 4.3.
    fn erf_f64(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0;
        while term.abs() > 1e-17 || n < 5 {
            sum += term / (2 * n + 1) as f64;
            n += 1;
            term *= -x * x / n as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}

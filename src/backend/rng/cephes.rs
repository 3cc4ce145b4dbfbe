//! One lane of the float32 Cephes `log` and `sincos` that torch's `avx_mathfun.h` (`log256_ps`,
//! `sincos256_ps`) computes for `torch.randn` on AVX2/AVX-512 CPUs.
//!
//! Bit-exactness needs more than the constants: torch's build compiles the header's separate
//! `mul` + `add` intrinsics with FMA contraction on, so every multiply that feeds an add becomes
//! one fused multiply-add. The `mul_add` calls below sit exactly where the compiled torch code
//! fuses; plain `*` and `+` are the operations it keeps rounded separately. The golden tests pin
//! this choice down (an unfused or differently fused variant differs in the last bit for a
//! fraction of a percent of elements).
//!
//! Constants are written as the header's double literals converted to `f32`, because C
//! initialises its float tables that way (decimal -> double -> float).

const SQRT_HALF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
const LOG_P0: f32 = 7.037_683_629_2e-2_f64 as f32;
const LOG_P1: f32 = -1.151_461_031_0e-1_f64 as f32;
const LOG_P2: f32 = 1.167_699_874_0e-1_f64 as f32;
const LOG_P3: f32 = -1.242_014_084_6e-1_f64 as f32;
const LOG_P4: f32 = 1.424_932_278_7e-1_f64 as f32;
const LOG_P5: f32 = -1.666_805_766_5e-1_f64 as f32;
const LOG_P6: f32 = 2.000_071_476_5e-1_f64 as f32;
const LOG_P7: f32 = -2.499_999_399_3e-1_f64 as f32;
const LOG_P8: f32 = 3.333_333_117_4e-1_f64 as f32;
/// ln(2) split in two so `e * ln 2` keeps extra precision: Q2 is exact in few bits, Q1 the rest.
const LOG_Q1: f32 = -2.121_944_40e-4_f64 as f32;
const LOG_Q2: f32 = 0.693_359_375_f64 as f32;

/// 4/pi: scales the argument into octants.
const FOUR_OVER_PI: f32 = 1.273_239_544_735_16_f64 as f32;
/// pi/4 split in three for Cody-Waite argument reduction.
const MINUS_DP1: f32 = -0.785_156_25_f64 as f32;
const MINUS_DP2: f32 = -2.418_756_484_985_351_6e-4_f64 as f32;
const MINUS_DP3: f32 = -3.774_894_977_445_941e-8_f64 as f32;
const SIN_P0: f32 = -1.951_529_589_1e-4_f64 as f32;
const SIN_P1: f32 = 8.332_160_873_6e-3_f64 as f32;
const SIN_P2: f32 = -1.666_665_461_1e-1_f64 as f32;
const COS_P0: f32 = 2.443_315_711_809_948e-5_f64 as f32;
const COS_P1: f32 = -1.388_731_625_493_765e-3_f64 as f32;
const COS_P2: f32 = 4.166_664_568_298_827e-2_f64 as f32;

const SIGN_BIT: u32 = 0x8000_0000;
const EXPONENT_BITS: u32 = 0x7f80_0000;

/// Natural logarithm, `log256_ps` lane by lane. NaN for `x <= 0`; denormals are flushed to the
/// smallest normal first, as the vector code does.
#[inline(always)]
pub fn log(x: f32) -> f32 {
    if x <= 0.0 {
        return f32::NAN;
    }
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let biased_exponent = (bits >> 23) as i32;
    // Mantissa rescaled into [0.5, 1).
    let mut m = f32::from_bits((bits & !EXPONENT_BITS) | 0.5f32.to_bits());
    let mut e = (biased_exponent - 0x7f) as f32 + 1.0;

    // Move the mantissa into [sqrt(1/2) - 1, sqrt(2) - 1) around 0 for the polynomial.
    let below_sqrt_half = m < SQRT_HALF;
    let doubled_part = if below_sqrt_half { m } else { 0.0 };
    m -= 1.0;
    e -= if below_sqrt_half { 1.0 } else { 0.0 };
    m += doubled_part;

    let z = m * m;
    let mut y = LOG_P0;
    y = y.mul_add(m, LOG_P1);
    y = y.mul_add(m, LOG_P2);
    y = y.mul_add(m, LOG_P3);
    y = y.mul_add(m, LOG_P4);
    y = y.mul_add(m, LOG_P5);
    y = y.mul_add(m, LOG_P6);
    y = y.mul_add(m, LOG_P7);
    y = y.mul_add(m, LOG_P8);
    y *= m;
    y = y.mul_add(z, e * LOG_Q1);
    y = (-z).mul_add(0.5, y);
    let sum = m + y;
    e.mul_add(LOG_Q2, sum)
}

/// `(sin x, cos x)`, `sincos256_ps` lane by lane (accurate for |x| < 8192).
#[inline(always)]
pub fn sincos(x: f32) -> (f32, f32) {
    let mut sin_sign = x.to_bits() & SIGN_BIT;
    let mut r = x.abs();

    // Octant index j, rounded up to even (the Cephes `j = (j + 1) & ~1`). The float -> int
    // conversion truncates like `cvttps`; arguments here are far below i32::MAX.
    let octant = (((r * FOUR_OVER_PI) as i32) + 1) & !1;
    let octant_f = octant as f32;
    sin_sign ^= ((octant & 4) as u32) << 29;
    let cos_sign = ((!(octant - 2) & 4) as u32) << 29;
    let sin_uses_sin_poly = octant & 2 == 0;

    r = octant_f.mul_add(MINUS_DP1, r);
    r = octant_f.mul_add(MINUS_DP2, r);
    r = octant_f.mul_add(MINUS_DP3, r);

    let z = r * r;
    let mut cos_poly = COS_P0.mul_add(z, COS_P1);
    cos_poly = cos_poly.mul_add(z, COS_P2);
    cos_poly *= z;
    // Fused as y*z - (z*0.5): the compiled code keeps z*0.5 rounded and fuses the other product.
    cos_poly = cos_poly.mul_add(z, -(z * 0.5));
    cos_poly += 1.0;

    let mut sin_poly = SIN_P0.mul_add(z, SIN_P1);
    sin_poly = sin_poly.mul_add(z, SIN_P2);
    sin_poly *= z;
    sin_poly = sin_poly.mul_add(r, r);

    // The vector code selects with masks and then adds/subtracts the masked parts; doing the
    // same arithmetic keeps signed zeros identical.
    let (sin_from_sin_poly, sin_from_cos_poly) = if sin_uses_sin_poly {
        (sin_poly, 0.0)
    } else {
        (0.0, cos_poly)
    };
    let sin = sin_from_cos_poly + sin_from_sin_poly;
    let cos = (cos_poly - sin_from_cos_poly) + (sin_poly - sin_from_sin_poly);
    (
        f32::from_bits(sin.to_bits() ^ sin_sign),
        f32::from_bits(cos.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_close_to_libm() {
        let mut x = 1.0f32 / 16_777_216.0;
        while x <= 1.0 {
            let expected = f64::from(x).ln();
            assert!(
                (f64::from(log(x)) - expected).abs() <= 2e-7 * expected.abs().max(1.0),
                "{x}"
            );
            x *= 1.37;
        }
        assert_eq!(log(1.0), 0.0);
        assert!(log(0.0).is_nan() && log(-1.0).is_nan());
    }

    #[test]
    fn sincos_is_close_to_libm() {
        for i in 0..=1000 {
            let x = i as f32 * (std::f32::consts::TAU / 1000.0);
            let (s, c) = sincos(x);
            assert!((f64::from(s) - f64::from(x).sin()).abs() < 3e-7, "sin {x}");
            assert!((f64::from(c) - f64::from(x).cos()).abs() < 3e-7, "cos {x}");
        }
    }
}

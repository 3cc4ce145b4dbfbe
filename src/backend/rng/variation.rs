//! A1111's variation seeds (`subseed`, `subseed_strength`) and `seed_resize_from`, as
//! `modules/rng.py` `ImageRNG.first()` makes an image's initial noise:
//!
//! 1. `noise = randn(seed, shape)`; with a resize-from size, `randn(seed, from_shape)` from a
//!    fresh generator instead.
//! 2. With a strength ≠ 0: `noise = slerp(strength, noise, randn(subseed, same shape))`.
//! 3. With a resize-from size: the image's own generator draws the target shape and the
//!    (varied) from-size noise is pasted into its centre, cropped where it is larger.
//!
//! The image's own generator always makes exactly one target-size draw, so the sampler's later
//! noise is the same with or without a variation (as in A1111).

use super::make_generator;
use crate::backend::request::RngKind;

/// What varies one image's initial noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageVariation {
    pub kind: RngKind,
    /// The image's own seed (the from-size noise is a fresh draw of it).
    pub seed: u64,
    pub subseed: u64,
    /// A1111 `subseed_strength`: 0 keeps the seed's noise, 1 gives the subseed's.
    pub strength: f64,
    /// `seed_resize_from` in latent cells `(height, width)`.
    pub resize_from: Option<(usize, usize)>,
}

impl ImageVariation {
    /// The varied noise of one `[channels, height, width]` image whose own generator drew
    /// `target` (`channels * height * width` values).
    pub fn apply(&self, target: Vec<f32>, [channels, height, width]: [usize; 3]) -> Vec<f32> {
        let from = self.resize_from.filter(|&size| size != (height, width));
        let shape = match from {
            Some((h, w)) => [channels, h, w],
            None => [channels, height, width],
        };
        let count = shape.iter().product();
        let mut noise = match from {
            Some(_) => make_generator(self.kind, self.seed).randn(count),
            None => target.clone(),
        };
        if self.strength != 0.0 {
            let sub = make_generator(self.kind, self.subseed).randn(count);
            noise = slerp(self.strength, &noise, &sub, shape);
        }
        match from {
            Some(_) => paste_centred(target, [channels, height, width], &noise, shape),
            None => noise,
        }
    }
}

/// A1111's `slerp(val, low, high)` over one `[C, H, W]` image, in f32 as torch computes it:
/// vectors run along H (torch `dim=1`), one angle per (channel, column); when the two are
/// nearly parallel (mean cosine > 0.9995) it returns `low * val + high * (1 - val)` (A1111's
/// weights, reversed as they are there).
pub fn slerp(val: f64, low: &[f32], high: &[f32], [channels, height, width]: [usize; 3]) -> Vec<f32> {
    let at = |c: usize, y: usize, x: usize| (c * height + y) * width + x;
    let norm = |data: &[f32], c: usize, x: usize| (0..height).map(|y| data[at(c, y, x)] * data[at(c, y, x)]).sum::<f32>().sqrt();
    let mut dots = vec![0f32; channels * width];
    for c in 0..channels {
        for x in 0..width {
            let (low_norm, high_norm) = (norm(low, c, x), norm(high, c, x));
            dots[c * width + x] = (0..height).map(|y| (low[at(c, y, x)] / low_norm) * (high[at(c, y, x)] / high_norm)).sum();
        }
    }
    let mean_dot = if dots.is_empty() { 0.0 } else { dots.iter().sum::<f32>() / dots.len() as f32 };
    let val32 = val as f32;
    if mean_dot > 0.9995 {
        let rest = (1.0 - val) as f32;
        return low.iter().zip(high).map(|(l, h)| l * val32 + h * rest).collect();
    }
    let rest = (1.0 - val) as f32;
    let mut out = vec![0f32; low.len()];
    for c in 0..channels {
        for x in 0..width {
            let omega = dots[c * width + x].acos();
            let so = omega.sin();
            let (low_weight, high_weight) = ((rest * omega).sin() / so, (val32 * omega).sin() / so);
            for y in 0..height {
                let i = at(c, y, x);
                out[i] = low_weight * low[i] + high_weight * high[i];
            }
        }
    }
    out
}

/// `target` with `noise` (of `from` shape) pasted centred, as A1111 does: offsets are
/// `(target - from) // 2` (floor), and a larger `noise` is cropped symmetrically.
fn paste_centred(mut target: Vec<f32>, [channels, height, width]: [usize; 3], noise: &[f32], [_, from_h, from_w]: [usize; 3]) -> Vec<f32> {
    let span = |to: usize, from: usize| {
        let offset = (to as i64 - from as i64).div_euclid(2);
        let len = if offset >= 0 { from as i64 } else { from as i64 + 2 * offset };
        // (destination start, source start, length)
        (offset.max(0) as usize, (-offset).max(0) as usize, len.max(0) as usize)
    };
    let (ty, sy, rows) = span(height, from_h);
    let (tx, sx, cols) = span(width, from_w);
    for c in 0..channels {
        for row in 0..rows.min(height - ty) {
            let dst = (c * height + ty + row) * width + tx;
            let src = (c * from_h + sy + row) * from_w + sx;
            let n = cols.min(width - tx);
            target[dst..dst + n].copy_from_slice(&noise[src..src + n]);
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variation(strength: f64, resize_from: Option<(usize, usize)>) -> ImageVariation {
        ImageVariation { kind: RngKind::Philox, seed: 1, subseed: 2, strength, resize_from }
    }

    fn draw(kind: RngKind, seed: u64, n: usize) -> Vec<f32> {
        make_generator(kind, seed).randn(n)
    }

    #[test]
    fn strength_zero_is_the_seed_and_one_is_the_subseed_bit_exact() {
        for kind in [RngKind::Philox, RngKind::TorchCpu] {
            let shape = [4, 8, 6];
            let base = draw(kind, 1, 192);
            let zero = ImageVariation { kind, ..variation(0.0, None) }.apply(base.clone(), shape);
            assert_eq!(zero, base);
            let one = ImageVariation { kind, ..variation(1.0, None) }.apply(base.clone(), shape);
            let sub = draw(kind, 2, 192);
            assert_eq!(one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), sub.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{kind:?}");
        }
    }

    /// Spherical interpolation of one (channel, column) vector pair in f64, written from the
    /// formula (not from `slerp` above).
    fn reference_slerp(t: f64, a: &[f64], b: &[f64]) -> Vec<f64> {
        let len = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (len(a) * len(b));
        let omega = cos.acos();
        a.iter().zip(b).map(|(x, y)| ((1.0 - t) * omega).sin() / omega.sin() * x + (t * omega).sin() / omega.sin() * y).collect()
    }

    #[test]
    fn half_strength_is_the_spherical_midpoint_along_height() {
        let (c, h, w) = (4usize, 8usize, 6usize);
        let base = draw(RngKind::Philox, 1, c * h * w);
        let sub = draw(RngKind::Philox, 2, c * h * w);
        let mixed = variation(0.5, None).apply(base.clone(), [c, h, w]);
        let mut worst = 0f64;
        for ch in 0..c {
            for x in 0..w {
                let column = |v: &[f32]| (0..h).map(|y| f64::from(v[(ch * h + y) * w + x])).collect::<Vec<_>>();
                let expected = reference_slerp(0.5, &column(&base), &column(&sub));
                for (y, e) in expected.iter().enumerate() {
                    worst = worst.max((f64::from(mixed[(ch * h + y) * w + x]) - e).abs());
                }
            }
        }
        assert!(worst < 1e-5, "max error {worst}");
    }

    #[test]
    fn nearly_parallel_noise_mixes_linearly_with_a1111s_weights() {
        let low = vec![1.0f32, 2.0, 3.0, 4.0];
        let high: Vec<f32> = low.iter().map(|v| v * 1.0001).collect();
        let out = slerp(0.25, &low, &high, [1, 4, 1]);
        for i in 0..4 {
            assert!((out[i] - (low[i] * 0.25 + high[i] * 0.75)).abs() < 1e-6);
        }
    }

    #[test]
    fn resize_from_pastes_the_smaller_noise_centred() {
        let (c, h, w) = (4usize, 8usize, 8usize);
        let target = draw(RngKind::Philox, 1, c * h * w);
        let out = variation(0.0, Some((4, 6))).apply(target.clone(), [c, h, w]);
        let small = draw(RngKind::Philox, 1, c * 4 * 6);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let inside = (2..6).contains(&y) && (1..7).contains(&x);
                    let expected = if inside { small[(ch * 4 + y - 2) * 6 + x - 1] } else { target[(ch * h + y) * w + x] };
                    assert_eq!(out[(ch * h + y) * w + x], expected, "({ch},{y},{x})");
                }
            }
        }
    }

    #[test]
    fn resize_from_crops_a_larger_noise_symmetrically() {
        let (c, h, w) = (1usize, 4usize, 4usize);
        let target = draw(RngKind::TorchCpu, 3, c * h * w);
        let big = draw(RngKind::TorchCpu, 3, 7 * 6);
        let out = ImageVariation { kind: RngKind::TorchCpu, seed: 3, subseed: 0, strength: 0.0, resize_from: Some((7, 6)) }.apply(target, [c, h, w]);
        // dy = (4-7)//2 = -2 → rows 2..5 of the 7 (h = 7 - 4 = 3 rows) into rows 0..3; row 3 keeps
        // the target; dx = (4-6)//2 = -1 → columns 1..5.
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(out[y * 4 + x], big[(y + 2) * 6 + x + 1]);
            }
        }
        let degenerate = variation(0.5, Some((0, 3))).apply(vec![0.5; 16], [1, 4, 4]);
        assert_eq!(degenerate, vec![0.5; 16]);
    }
}

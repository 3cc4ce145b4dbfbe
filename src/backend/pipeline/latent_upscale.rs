//! `torch.nn.functional.interpolate` over `[B, C, H, W]` latents for the modes A1111's hires fix
//! offers ("Latent", "Latent (bicubic)", "Latent (nearest-exact)", ...), written from torch's
//! CPU kernels' index and weight formulas (align_corners=False everywhere) and computed in f32.
//! Latents are small (4×128×128 at 1024 px), so this runs on the host whatever the device.

use candle_core::{DType, Result, Tensor};

use crate::backend::request::LatentInterpolation;

/// `latents` resized to `height`×`width` cells.
pub fn upscale_latents(latents: &Tensor, height: usize, width: usize, mode: LatentInterpolation) -> Result<Tensor> {
    let (batch, channels, in_h, in_w) = latents.dims4()?;
    let (device, dtype) = (latents.device().clone(), latents.dtype());
    let values: Vec<f32> = latents.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let rows = axis_weights(in_h, height, mode);
    let cols = axis_weights(in_w, width, mode);
    let mut out = vec![0f32; batch * channels * height * width];
    // Separable: along W into a temporary, then along H.
    let mut temp = vec![0f32; in_h * width];
    for plane in 0..batch * channels {
        let src = &values[plane * in_h * in_w..(plane + 1) * in_h * in_w];
        for y in 0..in_h {
            for (x, taps) in cols.iter().enumerate() {
                temp[y * width + x] = taps.iter().map(|&(i, w)| src[y * in_w + i] * w).sum();
            }
        }
        let dst = &mut out[plane * height * width..(plane + 1) * height * width];
        for (y, taps) in rows.iter().enumerate() {
            for x in 0..width {
                dst[y * width + x] = taps.iter().map(|&(i, w)| temp[i * width + x] * w).sum();
            }
        }
    }
    Tensor::from_vec(out, (batch, channels, height, width), &device)?.to_dtype(dtype)
}

/// For each output index along one axis: the input indices it reads and their weights.
fn axis_weights(input: usize, output: usize, mode: LatentInterpolation) -> Vec<Vec<(usize, f32)>> {
    let scale = input as f32 / output as f32;
    let last = input.saturating_sub(1);
    (0..output)
        .map(|dst| match mode {
            LatentInterpolation::Nearest => vec![(((dst as f32 * scale).floor() as usize).min(last), 1.0)],
            LatentInterpolation::NearestExact => vec![((((dst as f32 + 0.5) * scale).floor() as usize).min(last), 1.0)],
            LatentInterpolation::Bilinear => {
                // torch clamps the source coordinate at 0 for linear modes.
                let real = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (real as usize).min(last);
                let i1 = (i0 + 1).min(last);
                let l1 = real - i0 as f32;
                vec![(i0, 1.0 - l1), (i1, l1)]
            }
            LatentInterpolation::Bicubic => {
                const A: f32 = -0.75;
                let real = scale * (dst as f32 + 0.5) - 0.5;
                let base = real.floor();
                let t = real - base;
                let coeffs = [cubic_outer(t + 1.0, A), cubic_inner(t, A), cubic_inner(1.0 - t, A), cubic_outer(2.0 - t, A)];
                (0..4).map(|k| ((base as i64 - 1 + k as i64).clamp(0, last as i64) as usize, coeffs[k])).collect()
            }
            LatentInterpolation::BilinearAntialiased => antialiased(input, scale, dst, 1.0, |x| (1.0 - x.abs()).max(0.0)),
            LatentInterpolation::BicubicAntialiased => antialiased(input, scale, dst, 2.0, |x| {
                const A: f32 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    cubic_inner(x, A)
                } else if x < 2.0 {
                    cubic_outer(x, A)
                } else {
                    0.0
                }
            }),
        })
        .collect()
}

/// Keys' cubic convolution for |x| ≤ 1.
fn cubic_inner(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys' cubic convolution for 1 < |x| < 2.
fn cubic_outer(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// torch's `_upsample_*_aa` taps (Pillow's resampling): the filter is widened by the scale when
/// shrinking, only in-range inputs take part and the weights are renormalised to sum to 1.
fn antialiased(input: usize, scale: f32, dst: usize, half_support: f32, filter: impl Fn(f32) -> f32) -> Vec<(usize, f32)> {
    let support = half_support * scale.max(1.0);
    let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let center = scale * (dst as f32 + 0.5);
    let start = ((center - support + 0.5) as i64).max(0) as usize;
    let end = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
    let taps: Vec<(usize, f32)> = (start..end).map(|i| (i, filter((i as f32 - center + 0.5) * inv_scale))).collect();
    let total: f32 = taps.iter().map(|(_, w)| w).sum();
    if total == 0.0 {
        return taps;
    }
    taps.into_iter().map(|(i, w)| (i, w / total)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn upscale(values: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize), mode: LatentInterpolation) -> Vec<f32> {
        let t = Tensor::from_vec(values.to_vec(), (1, 1, h, w), &Device::Cpu).unwrap();
        upscale_latents(&t, oh, ow, mode).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    // Expected values worked out from torch's index formulas for a 2×2 → 4×4 bilinear resize.
    const INPUT: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

    #[test]
    fn bilinear_doubles_like_torch() {
        let expected = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        close(&upscale(&INPUT, (2, 2), (4, 4), LatentInterpolation::Bilinear), &expected);
        // Enlarging with antialias is the same triangle filter.
        close(&upscale(&INPUT, (2, 2), (4, 4), LatentInterpolation::BilinearAntialiased), &expected);
    }

    #[test]
    fn bicubic_doubles_like_torch() {
        // A row [1, 2] doubled with a = -0.75 and clamped borders, evaluated in f64 in Python
        // from torch's formula (real = 0.5·(d + 0.5) − 0.5, taps floor(real) − 1 .. + 2).
        let row = upscale(&[1.0, 2.0], (1, 2), (1, 4), LatentInterpolation::Bicubic);
        // Exact in f32: 229/256, 314/256, 454/256, 539/256.
        close(&row, &[229.0 / 256.0, 314.0 / 256.0, 454.0 / 256.0, 539.0 / 256.0]);
    }

    #[test]
    fn nearest_modes_pick_torch_indices() {
        // 3 → 5: legacy nearest floor(d·0.6) = 0,0,1,1,2; nearest-exact floor((d+.5)·0.6) = 0,0,1,2,2.
        assert_eq!(upscale(&[0.0, 1.0, 2.0], (1, 3), (1, 5), LatentInterpolation::Nearest), vec![0.0, 0.0, 1.0, 1.0, 2.0]);
        assert_eq!(upscale(&[0.0, 1.0, 2.0], (1, 3), (1, 5), LatentInterpolation::NearestExact), vec![0.0, 0.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn antialiased_bicubic_weights_sum_to_one_and_keep_constants() {
        let flat = upscale(&[0.5; 9], (3, 3), (7, 5), LatentInterpolation::BicubicAntialiased);
        close(&flat, &[0.5; 35]);
        let shrunk = upscale(&[0.5; 16], (4, 4), (2, 2), LatentInterpolation::BicubicAntialiased);
        close(&shrunk, &[0.5; 4]);
    }
}

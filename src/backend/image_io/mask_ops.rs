//! The mask operations A1111's img2img applies before resizing: invert
//! (`inpainting_mask_invert`) and the Gaussian `mask_blur`, reproducing OpenCV's bit-exact
//! 8-bit `GaussianBlur` (tests/image_io_goldens.rs compares against cv2 output).

use rayon::prelude::*;

use super::resize::raster_of;
use super::ImageIoError;
use crate::backend::request::MaskImage;

/// `ImageOps.invert` of a mask (A1111 `inpainting_mask_invert`).
pub fn invert_mask(mask: &MaskImage) -> MaskImage {
    MaskImage {
        width: mask.width,
        height: mask.height,
        pixels: mask.pixels.iter().map(|&v| 255 - v).collect(),
    }
}

/// OpenCV's 8-bit Gaussian kernel as `GaussianBlur` uses it: `getGaussianKernelBitExact`
/// (sigma given, A1111's size `2 * int(2.5 * sigma + 0.5) + 1`) quantized to Q8.8 integers by
/// `getGaussianKernelFixedPoint_ED` (error diffusion from the outside in, round half to even,
/// the centre taking whatever makes the sum exactly 256).
fn opencv_fixed_gaussian_kernel(sigma: f64) -> Vec<i64> {
    let size = 2 * (2.5 * sigma + 0.5) as usize + 1;
    let half = (size - 1) / 2;
    // OpenCV works on doubled coordinates x = 2i - (n - 1) with scale -0.125 / sigma^2.
    let scale = -0.125 / (sigma * sigma);
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = 2 * i as i64 + 1 - size as i64;
            ((x * x) as f64 * scale).exp()
        })
        .collect();
    let total = values.iter().sum::<f64>() * 2.0 + 1.0;
    let normalize = 1.0 / total;

    let mut fixed = vec![0i64; size];
    let mut error = 0.0;
    let mut outer_sum = 0;
    for (i, value) in values.iter().enumerate() {
        let adjusted = value * normalize * 256.0 + error;
        let rounded = adjusted.round_ties_even();
        error = adjusted - rounded;
        fixed[i] = rounded as i64;
        fixed[size - 1 - i] = rounded as i64;
        outer_sum += rounded as i64;
    }
    fixed[half] = 256 - 2 * outer_sum;
    fixed
}

/// OpenCV's default border, `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`).
fn reflect_101(index: i64, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as i64 - 1);
    let folded = index.rem_euclid(period);
    (if folded < len as i64 { folded } else { period - folded }) as usize
}

/// One 1-D pass of OpenCV's fixed-point `GaussianBlur` along x (`horizontal`) or y: integer
/// sum of Q8.8 weights times pixels, then `(sum + 128) >> 8`.
fn blur_pass(pixels: &[u8], width: usize, height: usize, kernel: &[i64], horizontal: bool) -> Vec<u8> {
    let radius = (kernel.len() / 2) as i64;
    let mut out = vec![0u8; pixels.len()];
    out.par_chunks_mut(width).enumerate().for_each(|(y, out_row)| {
        for (x, out_value) in out_row.iter_mut().enumerate() {
            let mut acc = 0i64;
            for (k, &weight) in kernel.iter().enumerate() {
                let offset = k as i64 - radius;
                let (sx, sy) = if horizontal {
                    (reflect_101(x as i64 + offset, width), y)
                } else {
                    (x, reflect_101(y as i64 + offset, height))
                };
                acc += weight * i64::from(pixels[sy * width + sx]);
            }
            *out_value = ((acc + 128) >> 8).clamp(0, 255) as u8;
        }
    });
    out
}

/// A1111 `mask_blur_x` / `mask_blur_y`: `cv2.GaussianBlur` with a (k, 1) kernel and sigma
/// `sigma_x`, then with a (1, k) kernel and `sigma_y`, each pass rounded to 8 bits, reproducing
/// OpenCV's bit-exact 8-bit path. A sigma <= 0 skips that axis.
pub fn blur_mask(mask: &MaskImage, sigma_x: f64, sigma_y: f64) -> Result<MaskImage, ImageIoError> {
    let src = raster_of(mask.width, mask.height, 1, &mask.pixels)?;
    let (w, h) = (src.width, src.height);
    let mut pixels = src.data;
    if sigma_x > 0.0 {
        pixels = blur_pass(&pixels, w, h, &opencv_fixed_gaussian_kernel(sigma_x), true);
    }
    if sigma_y > 0.0 {
        pixels = blur_pass(&pixels, w, h, &opencv_fixed_gaussian_kernel(sigma_y), false);
    }
    Ok(MaskImage {
        width: mask.width,
        height: mask.height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_invert_and_blur() {
        let mask = MaskImage {
            width: 3,
            height: 1,
            pixels: vec![0, 100, 255],
        };
        assert_eq!(invert_mask(&mask).pixels, vec![255, 155, 0]);

        // Sigma 1: kernel size 2*int(3.0)+1 = 7, Gaussian weights 0.0044, 0.0540, 0.2420, 0.3991
        // quantized to Q8.8 with error diffusion: 1, 14, 62, then 256 - 2*77 = 102 in the centre.
        assert_eq!(opencv_fixed_gaussian_kernel(1.0), vec![1, 14, 62, 102, 62, 14, 1]);
        assert_eq!(opencv_fixed_gaussian_kernel(4.0).iter().sum::<i64>(), 256);
        assert_eq!(opencv_fixed_gaussian_kernel(4.0).len(), 21);

        // A single white pixel: the centre after both passes is
        // (102 * ((102 * 255 + 128) >> 8) + 128) >> 8.
        let mut pixels = vec![0u8; 15 * 15];
        pixels[7 * 15 + 7] = 255;
        let blurred = blur_mask(
            &MaskImage {
                width: 15,
                height: 15,
                pixels,
            },
            1.0,
            1.0,
        )
        .expect("blur");
        let after_x = |w: i64| (w * 255 + 128) >> 8;
        let centre = (102 * after_x(102) + 128) >> 8;
        assert_eq!(i64::from(blurred.pixels[7 * 15 + 7]), centre);
        // Separable and symmetric.
        assert_eq!(blurred.pixels[7 * 15 + 6], blurred.pixels[6 * 15 + 7]);
        assert_eq!(blurred.pixels[7 * 15 + 6], blurred.pixels[7 * 15 + 8]);
        assert_eq!(blurred.pixels[0], 0);

        // Sigma 0 leaves the mask alone; reflect-101 borders keep a uniform mask uniform.
        let flat = MaskImage {
            width: 5,
            height: 4,
            pixels: vec![200; 20],
        };
        assert_eq!(blur_mask(&flat, 0.0, 0.0).expect("no-op").pixels, flat.pixels);
        assert_eq!(blur_mask(&flat, 4.0, 4.0).expect("blur").pixels, flat.pixels);
    }

    #[test]
    fn reflect_101_folds_like_opencv() {
        let got: Vec<usize> = (-4..9).map(|i| reflect_101(i, 5)).collect();
        assert_eq!(got, vec![4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]);
        assert_eq!(reflect_101(-7, 1), 0);
    }
}

//! Cheap live previews: latents -> RGB through a fixed linear map (no VAE), the approximation
//! ComfyUI's "Latent2RGB" previewer uses. Good enough to show composition and colour while
//! sampling, at a tiny fraction of a VAE decode's cost.

use candle_core::{bail, DType, Device, Result, Tensor};
use image::RgbImage;

/// Refuses to allocate previews larger than this (4096 x 4096); real requests are far smaller.
const MAX_PREVIEW_PIXELS: u64 = 4096 * 4096;

/// A per-channel linear map from (sampler-space, i.e. scaled) latents to RGB in about `-1..1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentRgbFactors {
    /// One `[r, g, b]` row per latent channel.
    pub weights: &'static [[f32; 3]],
    pub bias: [f32; 3],
}

impl LatentRgbFactors {
    /// SD 1.x / 2.x latents (ComfyUI's `SD15` latent format).
    pub const SD15: LatentRgbFactors = LatentRgbFactors {
        weights: &[
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        bias: [0.0, 0.0, 0.0],
    };

    /// SDXL latents (ComfyUI's `SDXL` latent format): the SDXL VAE has its own latent space.
    pub const SDXL: LatentRgbFactors = LatentRgbFactors {
        weights: &[
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        bias: [0.1084, -0.0175, -0.0011],
    };
}

/// Renders the first image of `latents` (`[B, C, h, w]` or `[C, h, w]`, scaled as the sampler
/// holds them) as RGB8. Without `size` the preview has the latent size; with `Some((width,
/// height))` it is upscaled (or shrunk) by nearest neighbour to that size.
pub fn latent_preview(
    latents: &Tensor,
    factors: &LatentRgbFactors,
    size: Option<(u32, u32)>,
) -> Result<RgbImage> {
    let latent = match latents.rank() {
        4 => latents.get(0)?,
        3 => latents.clone(),
        rank => bail!("latent preview expects [B, C, h, w] or [C, h, w], got rank {rank}"),
    };
    let (channels, height, width) = latent.dims3()?;
    if channels != factors.weights.len() {
        bail!(
            "latent preview factors are for {} channels, latents have {channels}",
            factors.weights.len()
        );
    }
    let (out_width, out_height) = size.unwrap_or((width as u32, height as u32));
    if out_width == 0 || out_height == 0 || height == 0 || width == 0 {
        bail!("latent preview of an empty image ({width}x{height} latents to {out_width}x{out_height})");
    }
    if u64::from(out_width) * u64::from(out_height) > MAX_PREVIEW_PIXELS {
        bail!("latent preview of {out_width}x{out_height} exceeds {MAX_PREVIEW_PIXELS} pixels");
    }

    let values = latent
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = height * width;
    let rgb_at = |pixel: usize| -> [u8; 3] {
        let mut rgb = factors.bias;
        for (channel, row) in factors.weights.iter().enumerate() {
            let value = values[channel * plane + pixel];
            for (out, weight) in rgb.iter_mut().zip(row) {
                *out += value * weight;
            }
        }
        // As ComfyUI: map -1..1 to 0..255, clamp, truncate.
        rgb.map(|v| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8)
    };

    let latent_pixels: Vec<[u8; 3]> = (0..plane).map(rgb_at).collect();
    // Nearest neighbour with torch's `interpolate(mode="nearest")` index rule:
    // source = floor(destination * source_size / destination_size).
    let image = RgbImage::from_fn(out_width, out_height, |x, y| {
        let src_x = (x as usize * width) / out_width as usize;
        let src_y = (y as usize * height) / out_height as usize;
        image::Rgb(latent_pixels[src_y * width + src_x])
    });
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latents() -> Tensor {
        let data: Vec<f32> = (0..4 * 6 * 5)
            .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
            .collect();
        Tensor::from_vec(data, (1, 4, 6, 5), &Device::Cpu).unwrap()
    }

    #[test]
    fn latent_size_by_default_and_deterministic() {
        let a = latent_preview(&latents(), &LatentRgbFactors::SD15, None).unwrap();
        let b = latent_preview(&latents(), &LatentRgbFactors::SD15, None).unwrap();
        assert_eq!(a.dimensions(), (5, 6));
        assert_eq!(a, b);
        let xl = latent_preview(&latents(), &LatentRgbFactors::SDXL, None).unwrap();
        assert_ne!(a, xl);
    }

    #[test]
    fn pixel_is_the_linear_map() {
        // One pixel with latent (1, 0, 0, 0): SD15 row 0 -> (0.3512, 0.2297, 0.3227).
        let t = Tensor::from_vec(vec![1f32, 0.0, 0.0, 0.0], (4, 1, 1), &Device::Cpu).unwrap();
        let img = latent_preview(&t, &LatentRgbFactors::SD15, None).unwrap();
        let expected = [0.3512f32, 0.2297, 0.3227].map(|v| ((v + 1.0) / 2.0 * 255.0) as u8);
        assert_eq!(img.get_pixel(0, 0).0, expected);
        // Large values clamp to white / black.
        let t = Tensor::from_vec(vec![10f32, 10.0, 0.0, 0.0], (1, 4, 1, 1), &Device::Cpu).unwrap();
        let img = latent_preview(&t, &LatentRgbFactors::SD15, None).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn nearest_upscale_to_requested_size() {
        let small = latent_preview(&latents(), &LatentRgbFactors::SD15, None).unwrap();
        let big = latent_preview(&latents(), &LatentRgbFactors::SD15, Some((40, 48))).unwrap();
        assert_eq!(big.dimensions(), (40, 48));
        for y in 0..48 {
            for x in 0..40 {
                assert_eq!(big.get_pixel(x, y), small.get_pixel(x / 8, y / 8));
            }
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let three = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(latent_preview(&three, &LatentRgbFactors::SD15, None).is_err());
        assert!(latent_preview(&latents(), &LatentRgbFactors::SD15, Some((0, 8))).is_err());
        assert!(latent_preview(
            &latents(),
            &LatentRgbFactors::SD15,
            Some((100_000, 100_000))
        )
        .is_err());
    }
}

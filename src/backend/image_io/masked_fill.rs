//! A1111's "fill" masked content (`masking.fill`): the masked pixels are replaced by ever
//! sharper blurs of the unmasked colours around them, so the area starts from the surrounding
//! colours instead of what was there. Byte-identical to A1111 on Pillow (tests/image_io_goldens.rs).

use super::pillow_rgba::{alpha_composite, gaussian_blur, premultiplied_outside_mask, to_rgb, unpremultiply, Rgba};
use super::ImageIoError;
use crate::backend::request::{MaskImage, RgbImage};

/// Blur radii and how often each blurred layer is composited, coarse to fine, as A1111 has them.
const LAYERS: [(f32, usize); 6] = [(256.0, 1), (64.0, 1), (16.0, 2), (4.0, 4), (2.0, 2), (0.0, 1)];

/// `masking.fill(image, mask)` (mask white = replace; soft values replace partly).
pub fn fill_masked_area(image: &RgbImage, mask: &MaskImage) -> Result<RgbImage, ImageIoError> {
    if (image.width, image.height) != (mask.width, mask.height) {
        return Err(ImageIoError::InvalidImage(format!(
            "mask {}x{} does not match image {}x{}",
            mask.width, mask.height, image.width, image.height
        )));
    }
    let masked = premultiplied_outside_mask(image, mask);
    let mut out = Rgba { width: masked.width, height: masked.height, pixels: vec![[0; 4]; masked.pixels.len()] };
    for (radius, repeats) in LAYERS {
        let blurred = unpremultiply(&gaussian_blur(&masked, radius));
        for _ in 0..repeats {
            alpha_composite(&mut out, &blurred);
        }
    }
    Ok(to_rgb(&out))
}

//! A1111's `apply_overlay`: after inpainting, the original pixels are composited back over the
//! generated image through the (blurred) mask, so only the masked area changes. For "Only
//! masked" the generated crop is first scaled back (resize mode 1, "crop and resize") and put at
//! its place on a transparent canvas of the original's size. Byte-identical to A1111 on Pillow
//! (tests/image_io_goldens.rs).

use super::crop_region::CropRegion;
use super::pillow_rgba::{alpha_composite, opaque, premultiplied_outside_mask, to_rgb, unpremultiply, Rgba};
use super::resize::{resize_image, ResizeMode};
use super::ImageIoError;
use crate::backend::request::{MaskImage, RgbImage};

/// The original image with alpha `255 - mask` (A1111's `overlay_images` entry).
fn overlay_layer(original: &RgbImage, mask: &MaskImage) -> Rgba {
    unpremultiply(&premultiplied_outside_mask(original, mask))
}

/// `apply_overlay(generated, paste_to, overlay)`: `original` and `mask` have the output size;
/// `generated` has it too when `paste_to` is `None`, otherwise it is scaled into `paste_to`.
pub fn overlay_original(generated: &RgbImage, original: &RgbImage, mask: &MaskImage, paste_to: Option<CropRegion>) -> Result<RgbImage, ImageIoError> {
    let (w, h) = (original.width, original.height);
    if (mask.width, mask.height) != (w, h) {
        return Err(ImageIoError::InvalidImage(format!("mask {}x{} does not match image {w}x{h}", mask.width, mask.height)));
    }
    let mut base = match paste_to {
        None if (generated.width, generated.height) == (w, h) => opaque(generated),
        None => return Err(ImageIoError::InvalidImage(format!("generated {}x{} does not match image {w}x{h}", generated.width, generated.height))),
        Some(region) => {
            if region.x2 > w || region.y2 > h || region.width() == 0 || region.height() == 0 {
                return Err(ImageIoError::InvalidImage(format!("paste region {region:?} is not inside the {w}x{h} image")));
            }
            let scaled = resize_image(generated, region.width(), region.height(), ResizeMode::CropAndResize)?;
            let mut canvas = Rgba { width: w as usize, height: h as usize, pixels: vec![[0; 4]; (w * h) as usize] };
            for (row, src) in scaled.pixels.chunks_exact(scaled.width as usize * 3).enumerate() {
                let start = (region.y1 as usize + row) * w as usize + region.x1 as usize;
                for (dst, px) in canvas.pixels[start..start + scaled.width as usize].iter_mut().zip(src.chunks_exact(3)) {
                    *dst = [px[0], px[1], px[2], 255];
                }
            }
            canvas
        }
    };
    alpha_composite(&mut base, &overlay_layer(original, mask));
    Ok(to_rgb(&base))
}

//! img2img's input images as A1111 prepares them before sampling: init images flattened onto
//! `img2img_background_color` where transparent, masks made binary (`create_binary_mask`),
//! inverted, blurred (`mask_blur_x/y`) at their own size, then both resized to the generation
//! size with the request's `resize_mode`.

use crate::backend::image_io::{blur_mask, decode_base64, decode_rgba, invert_mask, resize_image, resize_mask, ResizeMode, RgbaImage};
use crate::backend::request::{MaskImage, RgbImage};
use crate::http::a1111::errors::A1111Error;

/// Pillow's `DIV255`: `v / 255` rounded as Pillow's paste/blend does it.
fn div255(v: u32) -> u8 {
    let tmp = v + 128;
    (((tmp >> 8) + tmp) >> 8) as u8
}

/// Pillow's `L` conversion (ITU-R 601-2 luma in 16-bit fixed point).
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// `#rrggbb` (A1111's colour option format); white when unreadable.
pub fn parse_hex_color(text: &str) -> [u8; 3] {
    let hex = text.trim().trim_start_matches('#');
    let channel = |i: usize| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok());
    match (hex.len(), channel(0), channel(2), channel(4)) {
        (6, Some(r), Some(g), Some(b)) => [r, g, b],
        _ => [255, 255, 255],
    }
}

fn decode(field: &str, text: &str, max_pixels: u64) -> Result<RgbaImage, A1111Error> {
    let bytes = decode_base64(text).map_err(|e| A1111Error::bad_request(format!("Invalid encoded image in {field}: {e}")))?;
    decode_rgba(&bytes, max_pixels).map_err(|e| A1111Error::bad_request(format!("Invalid encoded image in {field}: {e}")))
}

/// An init image, transparent pixels flattened onto `background` (A1111's `images.flatten`).
pub fn init_image(field: &str, text: &str, max_pixels: u64, background: [u8; 3]) -> Result<RgbImage, A1111Error> {
    let image = decode(field, text, max_pixels)?;
    let pixels = image
        .pixels
        .chunks_exact(4)
        .flat_map(|px| {
            let a = u32::from(px[3]);
            if !image.has_alpha || a == 255 {
                [px[0], px[1], px[2]]
            } else {
                let blend = |fg: u8, bg: u8| div255(u32::from(bg) * (255 - a) + u32::from(fg) * a);
                [blend(px[0], background[0]), blend(px[1], background[1]), blend(px[2], background[2])]
            }
        })
        .collect();
    Ok(RgbImage { width: image.width, height: image.height, pixels })
}

/// How a mask is to be prepared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskOptions {
    pub invert: bool,
    pub blur_x: f64,
    pub blur_y: f64,
    pub round: bool,
}

/// A1111's `create_binary_mask`: the alpha channel (thresholded at > 128 when rounding) of an
/// RGBA mask that has transparency, otherwise the luma.
fn binary_mask(image: &RgbaImage, round: bool) -> MaskImage {
    let transparent = image.has_alpha && image.pixels.chunks_exact(4).any(|px| px[3] != 255);
    let pixels = image
        .pixels
        .chunks_exact(4)
        .map(|px| match (transparent, round) {
            (true, true) => {
                if px[3] > 128 {
                    255
                } else {
                    0
                }
            }
            (true, false) => px[3],
            (false, _) => luma(px[0], px[1], px[2]),
        })
        .collect();
    MaskImage { width: image.width, height: image.height, pixels }
}

/// A mask ready for the engine (white = repaint): made binary, inverted and blurred at its own
/// size, then resized to `fit_to` (width, height, mode) when given.
pub fn mask_image(text: &str, max_pixels: u64, options: MaskOptions, fit_to: Option<(u32, u32, ResizeMode)>) -> Result<MaskImage, A1111Error> {
    let mut mask = binary_mask(&decode("mask", text, max_pixels)?, options.round);
    if options.invert {
        mask = invert_mask(&mask);
    }
    if options.blur_x > 0.0 || options.blur_y > 0.0 {
        mask = blur_mask(&mask, options.blur_x, options.blur_y).map_err(|e| A1111Error::bad_request(format!("mask: {e}")))?;
    }
    match fit_to {
        Some((width, height, mode)) => fit_mask(&mask, width, height, mode),
        None => Ok(mask),
    }
}

/// A mask resized with an A1111 resize mode.
pub fn fit_mask(mask: &MaskImage, width: u32, height: u32, mode: ResizeMode) -> Result<MaskImage, A1111Error> {
    resize_mask(mask, width, height, mode).map_err(|e| A1111Error::bad_request(format!("mask: {e}")))
}

/// An init image resized to the generation size.
pub fn fit_init_image(image: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> Result<RgbImage, A1111Error> {
    if (image.width, image.height) == (width, height) {
        return Ok(image.clone());
    }
    resize_image(image, width, height, mode).map_err(|e| A1111Error::bad_request(format!("init_images: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_arithmetic() {
        assert_eq!(div255(255 * 255), 255);
        assert_eq!(div255(0), 0);
        assert_eq!(div255(128 * 255), 128);
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(parse_hex_color("#ff8000"), [255, 128, 0]);
        assert_eq!(parse_hex_color("bogus"), [255, 255, 255]);
    }

    #[test]
    fn transparent_masks_use_alpha_and_opaque_ones_luma() {
        let rgba = |pixels: Vec<u8>| RgbaImage { width: 2, height: 1, pixels, has_alpha: true };
        let mask = binary_mask(&rgba(vec![0, 0, 0, 200, 255, 255, 255, 100]), true);
        assert_eq!(mask.pixels, vec![255, 0]);
        let mask = binary_mask(&rgba(vec![255, 255, 255, 255, 10, 10, 10, 255]), true);
        assert_eq!(mask.pixels, vec![255, 10]);
    }
}

//! Images arriving inside requests as base64 (optionally a `data:` URL), decoded with the shared
//! image I/O into the protocol-neutral [`RgbImage`] / [`MaskImage`], with errors that name the
//! request field. Oversized images are refused from their header, before any pixel is decoded.

use crate::backend::image_io::{decode_base64, decode_rgb, ImageIoError};
use crate::backend::request::{MaskImage, RgbImage};
use crate::http::error::ApiError;

fn field_error(field: &str, error: ImageIoError) -> ApiError {
    ApiError::invalid_field(field, format!("{field}: {error}; send a base64-encoded PNG, JPEG or WebP image"))
}

/// Decode a base64 image to RGB (alpha dropped).
pub fn decode_rgb_image(field: &str, text: &str, max_pixels: u64) -> Result<RgbImage, ApiError> {
    let bytes = decode_base64(text).map_err(|e| field_error(field, e))?;
    decode_rgb(&bytes, max_pixels).map_err(|e| field_error(field, e))
}

/// Decode a base64 mask to one channel: luminance as PIL's `convert("L")` computes it (ITU-R 601,
/// the conversion A1111 applies to masks), white = repaint.
pub fn decode_mask_image(field: &str, text: &str, max_pixels: u64) -> Result<MaskImage, ApiError> {
    let rgb = decode_rgb_image(field, text, max_pixels)?;
    let pixels = rgb
        .pixels
        .chunks_exact(3)
        .map(|p| ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8)
        .collect();
    Ok(MaskImage { width: rgb.width, height: rgb.height, pixels })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use base64::Engine as _;

    use super::*;

    fn png_base64(width: u32, height: u32, rgb: [u8; 3]) -> String {
        let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn decodes_plain_and_data_url_base64() {
        let b64 = png_base64(3, 2, [10, 20, 30]);
        let plain = decode_rgb_image("input_image", &b64, 100).expect("plain");
        assert_eq!((plain.width, plain.height, plain.pixels[..3].to_vec()), (3, 2, vec![10, 20, 30]));
        let url = decode_rgb_image("input_image", &format!("data:image/png;base64,{b64}"), 100).expect("data url");
        assert_eq!(url, plain);
    }

    #[test]
    fn masks_use_pil_luminance() {
        let white = decode_mask_image("mask_image", &png_base64(2, 2, [255, 255, 255]), 100).expect("white");
        assert_eq!(white.pixels, vec![255; 4]);
        // PIL: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16; pure red gives 76.
        let red = decode_mask_image("mask_image", &png_base64(1, 1, [255, 0, 0]), 100).expect("red");
        assert_eq!(red.pixels, vec![76]);
    }

    #[test]
    fn garbage_and_oversize_name_the_field() {
        let err = decode_rgb_image("init_image", "!!!not base64!!!", 100).expect_err("garbage");
        assert_eq!(err.field.as_deref(), Some("init_image"));
        assert!(err.message.contains("base64"), "{}", err.message);
        let err = decode_rgb_image("init_image", "aGVsbG8gd29ybGQ=", 100).expect_err("not an image");
        assert!(err.message.contains("not a PNG, JPEG or WebP"), "{}", err.message);
        let err = decode_rgb_image("init_image", &png_base64(20, 20, [0, 0, 0]), 100).expect_err("too many pixels");
        assert!(err.message.contains("20x20"), "{}", err.message);
    }
}

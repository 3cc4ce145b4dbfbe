//! Images arriving inside requests as base64 (optionally a `data:` URL), decoded into the
//! protocol-neutral [`RgbImage`] / [`MaskImage`]. Decoding refuses images larger than the limits
//! before allocating them, so a tiny compressed "bomb" cannot exhaust memory.

use std::io::Cursor;

use base64::Engine as _;
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use crate::backend::request::{MaskImage, RgbImage};
use crate::http::error::ApiError;

/// Strip an optional `data:image/...;base64,` prefix and decode (standard or URL-safe alphabet,
/// whitespace ignored, padding optional).
pub fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let payload = match text.trim().split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text.trim(),
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ApiError::invalid_field(field, format!("{field} is empty; send a base64-encoded PNG, JPEG or WebP image")));
    }
    let lenient = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let standard = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url_safe = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    standard.decode(&compact).or_else(|_| url_safe.decode(&compact)).map_err(|e| {
        ApiError::invalid_field(field, format!("{field} is not valid base64 ({e}); send a base64-encoded PNG, JPEG or WebP image"))
    })
}

fn decode_image(field: &str, text: &str, max_pixels: u64) -> Result<DynamicImage, ApiError> {
    let bytes = decode_base64(field, text)?;
    let not_an_image = |e: &dyn std::fmt::Display| {
        ApiError::invalid_field(field, format!("{field} is not a readable image ({e}); send a PNG, JPEG or WebP image"))
    };
    let reader = || ImageReader::new(Cursor::new(bytes.as_slice())).with_guessed_format().map_err(|e| not_an_image(&e));
    let (width, height) = reader()?.into_dimensions().map_err(|e| not_an_image(&e))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ApiError::invalid_field(
            field,
            format!("{field} is {width}x{height}, more than the {max_pixels} pixels this worker accepts"),
        ));
    }
    reader()?.decode().map_err(|e| not_an_image(&e))
}

/// Decode a base64 image to RGB (alpha dropped).
pub fn decode_rgb_image(field: &str, text: &str, max_pixels: u64) -> Result<RgbImage, ApiError> {
    let image = decode_image(field, text, max_pixels)?.to_rgb8();
    Ok(RgbImage { width: image.width(), height: image.height(), pixels: image.into_raw() })
}

/// Decode a base64 mask to one channel (luma; white = repaint).
pub fn decode_mask_image(field: &str, text: &str, max_pixels: u64) -> Result<MaskImage, ApiError> {
    let image = decode_image(field, text, max_pixels)?.to_luma8();
    Ok(MaskImage { width: image.width(), height: image.height(), pixels: image.into_raw() })
}

/// Resize an RGB image (Lanczos) when it is not already `width` x `height`.
pub fn resize_rgb(image: RgbImage, width: u32, height: u32) -> Result<RgbImage, ApiError> {
    if (image.width, image.height) == (width, height) {
        return Ok(image);
    }
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels)
        .ok_or_else(|| ApiError::internal("decoded image has an inconsistent size"))?;
    let resized = image::imageops::resize(&buffer, width, height, FilterType::Lanczos3);
    Ok(RgbImage { width, height, pixels: resized.into_raw() })
}

/// Resize a mask (bilinear, keeping soft edges) when it is not already `width` x `height`.
pub fn resize_mask(mask: MaskImage, width: u32, height: u32) -> Result<MaskImage, ApiError> {
    if (mask.width, mask.height) == (width, height) {
        return Ok(mask);
    }
    let buffer = image::GrayImage::from_raw(mask.width, mask.height, mask.pixels)
        .ok_or_else(|| ApiError::internal("decoded mask has an inconsistent size"))?;
    let resized = image::imageops::resize(&buffer, width, height, FilterType::Triangle);
    Ok(MaskImage { width, height, pixels: resized.into_raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_base64(width: u32, height: u32) -> String {
        let image = image::RgbImage::from_pixel(width, height, image::Rgb([10, 20, 30]));
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn decodes_plain_and_data_url_base64() {
        let b64 = png_base64(3, 2);
        let plain = decode_rgb_image("input_image", &b64, 100).expect("plain");
        assert_eq!((plain.width, plain.height, plain.pixels[..3].to_vec()), (3, 2, vec![10, 20, 30]));
        let url = decode_rgb_image("input_image", &format!("data:image/png;base64,{b64}"), 100).expect("data url");
        assert_eq!(url, plain);
    }

    #[test]
    fn garbage_and_oversize_name_the_field() {
        let err = decode_rgb_image("init_image", "!!!not base64!!!", 100).expect_err("garbage");
        assert_eq!(err.field.as_deref(), Some("init_image"));
        assert!(err.message.contains("base64"), "{}", err.message);
        let err = decode_rgb_image("init_image", "aGVsbG8gd29ybGQ=", 100).expect_err("not an image");
        assert!(err.message.contains("not a readable image"), "{}", err.message);
        let err = decode_rgb_image("init_image", &png_base64(20, 20), 100).expect_err("too many pixels");
        assert!(err.message.contains("20x20"), "{}", err.message);
    }

    #[test]
    fn resize_changes_only_when_needed() {
        let img = decode_rgb_image("x", &png_base64(10, 10), 1000).expect("decode");
        assert_eq!(resize_rgb(img.clone(), 10, 10).expect("same"), img);
        let small = resize_rgb(img, 8, 4).expect("resize");
        assert_eq!((small.width, small.height, small.pixels.len()), (8, 4, 8 * 4 * 3));
    }
}

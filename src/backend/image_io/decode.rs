//! Decoding request images: format sniffed from magic bytes (a client's content type is never
//! trusted), dimensions checked from the header before any pixel is decoded (decompression
//! bombs), EXIF orientation applied (A1111 runs `ImageOps.exif_transpose` on every input).

use std::io::Cursor;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::ImageIoError;
use crate::backend::request::RgbImage;

/// Default cap on decoded pixels: 8192 x 8192 (268 MB as RGBA). Callers pass their own limit.
pub const DEFAULT_MAX_PIXELS: u64 = 8192 * 8192;

/// The formats this server reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
    WebP,
}

impl ImageKind {
    fn image_format(self) -> ImageFormat {
        match self {
            ImageKind::Png => ImageFormat::Png,
            ImageKind::Jpeg => ImageFormat::Jpeg,
            ImageKind::WebP => ImageFormat::WebP,
        }
    }
}

/// An RGBA8 image, for inputs whose alpha carries meaning (OpenAI masks: alpha 0 = edit here).
#[derive(Clone, PartialEq, Eq)]
pub struct RgbaImage {
    pub width: u32,
    pub height: u32,
    /// Row-major RGBA, 4 bytes per pixel.
    pub pixels: Vec<u8>,
    /// Whether the source had an alpha channel (PNG with alpha or tRNS, WebP with alpha). When
    /// false every alpha byte is 255, and mask readers fall back to luminance.
    pub has_alpha: bool,
}

impl std::fmt::Debug for RgbaImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RgbaImage({}x{}, has_alpha: {})",
            self.width, self.height, self.has_alpha
        )
    }
}

/// Sniff PNG, JPEG or WebP from the first bytes.
pub fn detect_format(bytes: &[u8]) -> Result<ImageKind, ImageIoError> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(ImageKind::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(ImageKind::Jpeg)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Ok(ImageKind::WebP)
    } else if bytes.is_empty() {
        Err(ImageIoError::UnsupportedFormat("empty image data".into()))
    } else {
        Err(ImageIoError::UnsupportedFormat("not a PNG, JPEG or WebP file".into()))
    }
}

/// Decode to a `DynamicImage` after checking the header's size against `max_pixels`.
fn decode_dynamic(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageIoError> {
    let kind = detect_format(bytes)?;
    let decode_error = |e: image::ImageError| ImageIoError::Decode(e.to_string());
    // `into_decoder` parses the header only; no pixel data is decoded before the check below.
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), kind.image_format())
        .into_decoder()
        .map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageIoError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    // A broken orientation tag is not worth refusing the image for.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Decode PNG/JPEG/WebP bytes to RGB; an alpha channel is dropped (not composited).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageIoError> {
    let rgb = decode_dynamic(bytes, max_pixels)?.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// Decode PNG/JPEG/WebP bytes to RGBA (alpha 255 where the source has none).
pub fn decode_rgba(bytes: &[u8], max_pixels: u64) -> Result<RgbaImage, ImageIoError> {
    let image = decode_dynamic(bytes, max_pixels)?;
    let has_alpha = image.color().has_alpha();
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    Ok(RgbaImage {
        width,
        height,
        pixels: rgba.into_raw(),
        has_alpha,
    })
}

/// Standard alphabet, padding optional: clients send both.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode an image sent as base64: raw base64 or a `data:<type>;base64,<payload>` URL, with
/// whitespace (line breaks from MIME encoders) tolerated anywhere. The data URL's media type is
/// ignored; the format is sniffed from the decoded bytes.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, ImageIoError> {
    let trimmed = text.trim();
    let payload = match trimmed.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("data:") => {
            let (header, data) = trimmed
                .split_once(',')
                .ok_or_else(|| ImageIoError::BadBase64("data URL without a ',' separator".into()))?;
            if !header.to_ascii_lowercase().ends_with(";base64") {
                return Err(ImageIoError::BadBase64("data URL is not base64-encoded".into()));
            }
            data
        }
        _ => trimmed,
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(ImageIoError::BadBase64("empty image data".into()));
    }
    LENIENT_STANDARD
        .decode(&compact)
        .or_else(|first| LENIENT_URL_SAFE.decode(&compact).map_err(|_| first))
        .map_err(|e| ImageIoError::BadBase64(e.to_string()))
}

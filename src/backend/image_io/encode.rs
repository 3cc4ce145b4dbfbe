//! Encoding finished images with the A1111 infotext embedded where A1111 puts it:
//! PNG `parameters` text chunk (as PIL's `PngInfo.add_text` writes it), JPEG/WebP EXIF
//! `UserComment` (as `piexif` writes it).

use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::exif::user_comment_exif;
use super::ImageIoError;
use crate::backend::request::{OutputFormat, RgbImage};

/// The PNG text keyword A1111 reads and writes.
const PARAMETERS_KEYWORD: &str = "parameters";

/// A JPEG APP1 segment holds at most 65533 payload bytes, 6 of which are the `Exif\0\0` marker.
const MAX_JPEG_EXIF_PAYLOAD: usize = 65533 - 6;

fn check_buffer(image: &RgbImage) -> Result<(), ImageIoError> {
    if image.width == 0 || image.height == 0 {
        return Err(ImageIoError::InvalidImage(format!(
            "cannot encode a {}x{} image",
            image.width, image.height
        )));
    }
    let expected = image.width as usize * image.height as usize * 3;
    if image.pixels.len() != expected {
        return Err(ImageIoError::InvalidImage(format!(
            "{}x{} RGB image needs {expected} bytes, got {}",
            image.width,
            image.height,
            image.pixels.len()
        )));
    }
    Ok(())
}

/// Encode in the requested output format; `infotext` (when given) is embedded as A1111 does.
pub fn encode_image(image: &RgbImage, format: OutputFormat, infotext: Option<&str>) -> Result<Vec<u8>, ImageIoError> {
    match format {
        OutputFormat::Png => encode_png(image, infotext),
        OutputFormat::Jpeg { quality } => encode_jpeg(image, quality, infotext),
        OutputFormat::Webp { quality } => encode_webp(image, quality, infotext),
    }
}

/// PIL's test for writing `tEXt` rather than `iTXt`: does `text.encode("latin-1")` succeed?
fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| u32::from(c) <= 0xFF)
}

/// PNG, 8-bit RGB. The infotext goes in a `tEXt` chunk with keyword `parameters` when it is
/// Latin-1 encodable, else in an uncompressed `iTXt` chunk (empty language tag and translated
/// keyword, UTF-8 text), written right after `IHDR` and before `IDAT`, exactly as PIL does.
pub fn encode_png(image: &RgbImage, infotext: Option<&str>) -> Result<Vec<u8>, ImageIoError> {
    check_buffer(image)?;
    let encode_error = |e: png::EncodingError| ImageIoError::Encode(e.to_string());
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    if let Some(text) = infotext {
        if is_latin1(text) {
            encoder
                .add_text_chunk(PARAMETERS_KEYWORD.to_string(), text.to_string())
                .map_err(encode_error)?;
        } else {
            // `ITXtChunk::new` is uncompressed with empty language tag and translated keyword.
            encoder
                .add_itxt_chunk(PARAMETERS_KEYWORD.to_string(), text.to_string())
                .map_err(encode_error)?;
        }
    }
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(&image.pixels).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(out)
}

/// JPEG at `quality` (clamped to 1..=100). The infotext goes in an EXIF APP1 segment as
/// `UserComment`. An infotext too long for one APP1 segment (about 32k characters) is left out
/// with a warning rather than failing the image; A1111's piexif raises in that case.
pub fn encode_jpeg(image: &RgbImage, quality: u8, infotext: Option<&str>) -> Result<Vec<u8>, ImageIoError> {
    check_buffer(image)?;
    let mut out = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
    if let Some(text) = infotext {
        let exif = user_comment_exif(text);
        if exif.len() <= MAX_JPEG_EXIF_PAYLOAD {
            encoder
                .set_exif_metadata(exif)
                .map_err(|e| ImageIoError::Encode(e.to_string()))?;
        } else {
            tracing::warn!(
                bytes = exif.len(),
                "infotext too long for a JPEG EXIF segment; not embedded"
            );
        }
    }
    encoder
        .write_image(&image.pixels, image.width, image.height, ExtendedColorType::Rgb8)
        .map_err(|e| ImageIoError::Encode(e.to_string()))?;
    Ok(out)
}

/// WebP. The `image` crate's WebP encoder is lossless only, so `quality` is accepted for API
/// compatibility and ignored: every WebP is lossless (larger than A1111's lossy ones, never
/// worse). The infotext goes in an `EXIF` chunk (VP8X container) as `UserComment`, like PIL
/// writes it from piexif's bytes.
pub fn encode_webp(image: &RgbImage, quality: u8, infotext: Option<&str>) -> Result<Vec<u8>, ImageIoError> {
    let _lossless_only = quality;
    check_buffer(image)?;
    let mut out = Vec::new();
    let mut encoder = WebPEncoder::new_lossless(&mut out);
    if let Some(text) = infotext {
        encoder
            .set_exif_metadata(user_comment_exif(text))
            .map_err(|e| ImageIoError::Encode(e.to_string()))?;
    }
    encoder
        .write_image(&image.pixels, image.width, image.height, ExtendedColorType::Rgb8)
        .map_err(|e| ImageIoError::Encode(e.to_string()))?;
    Ok(out)
}

//! Multipart forms of edits and variations, read the way the SDKs write them: one `image` part,
//! or repeated `image[]` (also `image[0]`, `image[1]`, ... and a repeated plain `image`), in
//! order; an optional `mask`; every other part is a text field. Image formats are sniffed from
//! the bytes: the SDK labels in-memory uploads `application/octet-stream`.

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use image::DynamicImage;

use crate::backend::request::{MaskImage, RgbImage};
use crate::http::image_input::decode_image_bytes;
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::plan::SourceImage;

/// OpenAI's limit on images per edit.
pub const MAX_IMAGES: usize = 16;

/// A multipart form split into files and text fields.
#[derive(Debug, Default)]
pub struct UploadForm {
    /// Text fields as JSON strings, ready for the same field parsing as JSON bodies.
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
}

fn is_image_field(name: &str) -> bool {
    name == "image"
        || name == "image[]"
        || name.strip_prefix("image[").and_then(|r| r.strip_suffix(']')).is_some_and(|i| i.parse::<u32>().is_ok())
}

pub async fn read_form(multipart: Result<Multipart, MultipartRejection>) -> Result<UploadForm, OpenAiError> {
    let mut multipart = multipart
        .map_err(|e| OpenAiError::invalid_request("invalid_request", format!("this endpoint takes a multipart/form-data body ({e})")))?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        OpenAiError::invalid_request("invalid_request", format!("the multipart body could not be read: {}", e.body_text()))
    };
    let mut form = UploadForm::default();
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_string();
        if is_image_field(&name) {
            if form.images.len() == MAX_IMAGES {
                return Err(OpenAiError::invalid_param("image", "invalid_value", format!("at most {MAX_IMAGES} images can be sent")));
            }
            form.images.push(field.bytes().await.map_err(unreadable)?);
        } else if name == "mask" {
            form.mask = Some(field.bytes().await.map_err(unreadable)?);
        } else if field.file_name().is_some() {
            // A file under a name we do not know: read past it.
            field.bytes().await.map_err(unreadable)?;
        } else {
            let text = field.text().await.map_err(unreadable)?;
            form.fields.insert(name, serde_json::Value::String(text));
        }
    }
    Ok(form)
}

fn decode(field: &str, bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, OpenAiError> {
    decode_image_bytes(field, bytes, max_pixels).map_err(|e| {
        OpenAiError::invalid_param(
            field,
            "invalid_image_format",
            format!("Invalid file '{field}': {}. Supported formats are PNG, JPEG and WebP.", e.message),
        )
    })
}

fn to_rgb(image: &DynamicImage) -> RgbImage {
    let rgb = image.to_rgb8();
    RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() }
}

/// OpenAI masks mark the area to edit with transparent pixels; the engine repaints white.
/// A mask without an alpha channel is read as a plain white = repaint mask.
pub fn engine_mask(image: &DynamicImage) -> MaskImage {
    let pixels =
        if image.color().has_alpha() { image.to_rgba8().pixels().map(|p| 255 - p.0[3]).collect() } else { image.to_luma8().into_raw() };
    MaskImage { width: image.width(), height: image.height(), pixels }
}

/// The first image (the one SD edits; further images would need a multi-reference model and
/// are only checked to be readable), with the mask converted to the engine's convention.
pub fn source_image(form: &UploadForm, max_pixels: u64) -> Result<SourceImage, OpenAiError> {
    let Some(first) = form.images.first() else {
        return Err(OpenAiError::missing_param("image"));
    };
    let image = decode("image", first, max_pixels)?;
    for extra in &form.images[1..] {
        decode("image", extra, max_pixels)?;
    }
    if form.images.len() > 1 {
        tracing::info!(images = form.images.len(), "edit with several images: the first is edited, the others are not used");
    }
    let mask = form.mask.as_deref().map(|bytes| decode("mask", bytes, max_pixels)).transpose()?;
    let alpha = image.color().has_alpha().then(|| engine_mask(&image)).filter(|m| m.pixels.iter().any(|&v| v > 0));
    Ok(SourceImage { image: to_rgb(&image), mask: mask.as_ref().map(engine_mask), image_alpha: alpha })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parts_are_recognised_in_every_spelling() {
        for name in ["image", "image[]", "image[0]", "image[12]"] {
            assert!(is_image_field(name), "{name}");
        }
        for name in ["images", "image[x]", "mask", "image[]]"] {
            assert!(!is_image_field(name), "{name}");
        }
    }

    #[test]
    fn transparent_mask_pixels_become_white() {
        let mut rgba = image::RgbaImage::from_pixel(2, 1, image::Rgba([0, 0, 0, 255]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 0]));
        let mask = engine_mask(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(mask.pixels, vec![0, 255]);
        let grey = image::GrayImage::from_raw(2, 1, vec![255, 0]).expect("2x1");
        assert_eq!(engine_mask(&DynamicImage::ImageLuma8(grey)).pixels, vec![255, 0]);
    }
}

//! Multipart forms of edits and variations, read the way the SDKs write them: one `image` part,
//! or repeated `image[]` (also `image[0]`, `image[1]`, ... and a repeated plain `image`), in
//! order; an optional `mask`; every other part is a text field. Image formats are sniffed from
//! the bytes: the SDK labels in-memory uploads `application/octet-stream`.

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};

use crate::backend::image_io::{decode_rgba, RgbaImage};
use crate::backend::request::{MaskImage, RgbImage};
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::plan::SourceImage;
use crate::http::plain_errors::body_too_large_message;

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

/// Read the whole form; a body over `max_body_mib` is a 413.
pub async fn read_form(multipart: Result<Multipart, MultipartRejection>, max_body_mib: u32) -> Result<UploadForm, OpenAiError> {
    let mut multipart = multipart
        .map_err(|e| OpenAiError::invalid_request("invalid_request", format!("this endpoint takes a multipart/form-data body ({e})")))?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            return OpenAiError::from_status(e.status(), body_too_large_message(max_body_mib));
        }
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

fn decode(field: &str, bytes: &[u8], max_pixels: u64) -> Result<RgbaImage, OpenAiError> {
    decode_rgba(bytes, max_pixels).map_err(|e| {
        OpenAiError::invalid_param(
            field,
            "invalid_image_format",
            format!("Invalid file '{field}': {e}. Supported formats are PNG, JPEG and WebP."),
        )
    })
}

fn to_rgb(image: &RgbaImage) -> RgbImage {
    let pixels = image.pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage { width: image.width, height: image.height, pixels }
}

/// OpenAI masks mark the area to edit with transparent pixels; the engine repaints white.
/// A mask without an alpha channel is read as a plain white = repaint mask (its luminance).
pub fn engine_mask(image: &RgbaImage) -> MaskImage {
    let pixels = if image.has_alpha {
        image.pixels.chunks_exact(4).map(|p| 255 - p[3]).collect()
    } else {
        // ITU-R 601 luma, as PIL's convert("L") computes it.
        image
            .pixels
            .chunks_exact(4)
            .map(|p| ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]) + 500) / 1000) as u8)
            .collect()
    };
    MaskImage { width: image.width, height: image.height, pixels }
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
    if let Some(mask) = mask.as_ref().filter(|m| (m.width, m.height) != (image.width, image.height)) {
        return Err(OpenAiError::invalid_param(
            "mask",
            "invalid_value",
            format!("mask is {}x{} but the image is {}x{}; they must have the same size", mask.width, mask.height, image.width, image.height),
        ));
    }
    let image_alpha = image.has_alpha.then(|| engine_mask(&image)).filter(|m| m.pixels.iter().any(|&v| v > 0));
    Ok(SourceImage { image: to_rgb(&image), mask: mask.as_ref().map(engine_mask), image_alpha })
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
        let rgba = RgbaImage { width: 2, height: 1, pixels: vec![0, 0, 0, 255, 0, 0, 0, 0], has_alpha: true };
        assert_eq!(engine_mask(&rgba).pixels, vec![0, 255]);
        let opaque = RgbaImage { width: 2, height: 1, pixels: vec![255, 255, 255, 255, 0, 0, 0, 255], has_alpha: false };
        assert_eq!(engine_mask(&opaque).pixels, vec![255, 0], "no alpha: white = repaint");
    }
}

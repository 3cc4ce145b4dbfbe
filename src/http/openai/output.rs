//! Turn what the engine produced into the file the client asked for: the exact requested size
//! and format. Images the engine already made at that size and format pass through untouched
//! (keeping their embedded parameters); others are resized (Lanczos) and encoded once.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageEncoder, RgbImage};

use crate::backend::request::{GeneratedImage, PreviewImage};
use crate::http::image_input::decode_image_bytes;
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::plan::OutputEncoding;
use crate::http::openai::wire::ImageFormat;

/// Engine images and previews are at most the server's largest side squared.
const MAX_ENGINE_PIXELS: u64 = 4096 * 4096;

/// A finished image as the client gets it.
#[derive(Debug, Clone)]
pub struct OutputImage {
    pub bytes: Vec<u8>,
    pub seed: u64,
}

/// The final file for one generated image.
pub fn finish_image(image: &GeneratedImage, width: u32, height: u32, encoding: OutputEncoding) -> Result<OutputImage, OpenAiError> {
    let ready = (image.width, image.height) == (width, height) && image.format == encoding.engine_format();
    let bytes = if ready { image.bytes.clone() } else { reencode(&image.bytes, width, height, encoding)? };
    Ok(OutputImage { bytes, seed: image.seed })
}

/// A preview at the requested size and format (for streamed partial images).
pub fn finish_preview(preview: &PreviewImage, width: u32, height: u32, encoding: OutputEncoding) -> Result<Vec<u8>, OpenAiError> {
    reencode(&preview.png, width, height, encoding)
}

fn reencode(bytes: &[u8], width: u32, height: u32, encoding: OutputEncoding) -> Result<Vec<u8>, OpenAiError> {
    let decoded = decode_image_bytes("image", bytes, MAX_ENGINE_PIXELS)
        .map_err(|e| OpenAiError::server_error(format!("could not read the generated image: {}", e.message)))?;
    let rgb = match decoded {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    let sized = if rgb.dimensions() == (width, height) { rgb } else { image::imageops::resize(&rgb, width, height, FilterType::Lanczos3) };
    encode(&sized, encoding)
        .map_err(|e| OpenAiError::server_error(format!("could not encode the image as {}: {e}", encoding.format.name())))
}

fn encode(image: &RgbImage, encoding: OutputEncoding) -> image::ImageResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let (w, h) = image.dimensions();
    let color = image::ExtendedColorType::Rgb8;
    match encoding.format {
        ImageFormat::Png => PngEncoder::new(&mut out).write_image(image.as_raw(), w, h, color)?,
        ImageFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, encoding.quality).write_image(image.as_raw(), w, h, color)?,
        // The `image` crate only writes lossless WebP; the quality is ignored.
        ImageFormat::Webp => WebPEncoder::new_lossless(&mut out).write_image(image.as_raw(), w, h, color)?,
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::request::OutputFormat;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
        encode(&image, OutputEncoding { format: ImageFormat::Png, quality: 100 }).expect("encode")
    }

    fn generated(width: u32, height: u32) -> GeneratedImage {
        GeneratedImage { index: 0, bytes: png(width, height), format: OutputFormat::Png, width, height, seed: 3, infotext: String::new() }
    }

    #[test]
    fn matching_images_pass_through_untouched() {
        let image = generated(8, 8);
        let out = finish_image(&image, 8, 8, OutputEncoding { format: ImageFormat::Png, quality: 100 }).expect("ok");
        assert_eq!(out.bytes, image.bytes);
        assert_eq!(out.seed, 3);
    }

    #[test]
    fn other_sizes_and_formats_are_resized_and_reencoded() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp] {
            let out = finish_image(&generated(8, 8), 24, 16, OutputEncoding { format, quality: 80 }).expect("ok");
            let decoded = image::load_from_memory(&out.bytes).expect("decodes");
            assert_eq!((decoded.width(), decoded.height()), (24, 16));
            let expected = match format {
                ImageFormat::Png => image::ImageFormat::Png,
                ImageFormat::Jpeg => image::ImageFormat::Jpeg,
                ImageFormat::Webp => image::ImageFormat::WebP,
            };
            assert_eq!(image::guess_format(&out.bytes).expect("known"), expected);
        }
    }
}

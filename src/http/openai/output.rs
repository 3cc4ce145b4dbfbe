//! Turn what the engine produced into the file the client asked for: the exact requested size
//! and format. Images the engine already made at that size and format pass through untouched;
//! others are resized (Lanczos) and encoded once, keeping the image's parameters text.

use crate::backend::image_io::{decode_rgb, encode_image, resize_rgb, ImageIoError};
use crate::backend::request::{GeneratedImage, PreviewImage};
use crate::http::openai::errors::OpenAiError;
use crate::http::openai::plan::OutputEncoding;

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
    let infotext = Some(image.infotext.as_str()).filter(|t| !t.is_empty());
    let bytes = if ready { image.bytes.clone() } else { reencode(&image.bytes, width, height, encoding, infotext)? };
    Ok(OutputImage { bytes, seed: image.seed })
}

/// A preview at the requested size and format (for streamed partial images).
pub fn finish_preview(preview: &PreviewImage, width: u32, height: u32, encoding: OutputEncoding) -> Result<Vec<u8>, OpenAiError> {
    reencode(&preview.png, width, height, encoding, None)
}

fn reencode(bytes: &[u8], width: u32, height: u32, encoding: OutputEncoding, infotext: Option<&str>) -> Result<Vec<u8>, OpenAiError> {
    let failed = |e: ImageIoError| OpenAiError::server_error(format!("could not produce the {} image: {e}", encoding.format.name()));
    let decoded = decode_rgb(bytes, MAX_ENGINE_PIXELS).map_err(failed)?;
    let sized =
        if (decoded.width, decoded.height) == (width, height) { decoded } else { resize_rgb(&decoded, width, height).map_err(failed)? };
    encode_image(&sized, encoding.engine_format(), infotext).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::image_io::{encode_png, read_infotext};
    use crate::backend::request::{OutputFormat, RgbImage};
    use crate::http::openai::wire::ImageFormat;

    fn generated(width: u32, height: u32) -> GeneratedImage {
        let image = RgbImage { width, height, pixels: vec![200; (width * height * 3) as usize] };
        let bytes = encode_png(&image, Some("a fox\nSteps: 4")).expect("encode");
        GeneratedImage { index: 0, bytes, format: OutputFormat::Png, width, height, seed: 3, infotext: "a fox\nSteps: 4".into(), warnings: Vec::new() }
    }

    #[test]
    fn matching_images_pass_through_untouched() {
        let image = generated(8, 8);
        let out = finish_image(&image, 8, 8, OutputEncoding { format: ImageFormat::Png, quality: 100 }).expect("ok");
        assert_eq!(out.bytes, image.bytes);
        assert_eq!(out.seed, 3);
    }

    #[test]
    fn other_sizes_and_formats_are_resized_and_reencoded_with_their_parameters() {
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
            assert_eq!(read_infotext(&out.bytes).expect("readable").as_deref(), Some("a fox\nSteps: 4"), "{format:?}");
        }
    }
}

//! The one error type of image I/O. Faces map it onto their own error bodies (A1111 answers 500
//! "Invalid encoded image", OpenAI 400 invalid_image_format, ...).

/// What went wrong reading or writing an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageIoError {
    /// The text is not valid base64 (after removing a `data:` prefix and whitespace).
    #[error("invalid base64 image data: {0}")]
    BadBase64(String),
    /// The bytes are not a PNG, JPEG or WebP file (detected from magic bytes only).
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// The file claims a supported format but could not be decoded.
    #[error("could not decode image: {0}")]
    Decode(String),
    /// The header announces more pixels than allowed; refused before decoding any pixel data.
    #[error("image too large: {width}x{height} exceeds the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    /// The pixel buffer does not match its dimensions, or a size is zero.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image could not be encoded (bad buffer size, dimensions the format cannot hold, ...).
    #[error("could not encode image: {0}")]
    Encode(String),
}

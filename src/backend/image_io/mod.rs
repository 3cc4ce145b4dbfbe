//! Protocol-neutral image I/O: encoding with the A1111 infotext embedded, format-sniffing decode
//! with a decompression-bomb guard, base64 / data-URL input, reading the infotext back, and the
//! A1111 resize modes and mask operations, and the image steps of A1111's inpainting (fill,
//! "Only masked" crop region, overlay). No tensors here.

pub mod crop_region;
pub mod decode;
pub mod encode;
mod error;
mod exif;
pub mod mask_ops;
pub mod masked_fill;
pub mod overlay;
mod pillow_rgba;
pub mod read_text;
mod resample;
pub mod resize;

pub use decode::{decode_base64, decode_rgb, decode_rgba, detect_format, ImageKind, RgbaImage, DEFAULT_MAX_PIXELS};
pub use encode::{encode_image, encode_jpeg, encode_png, encode_webp};
pub use error::ImageIoError;
pub use crop_region::{crop_mask, crop_rgb, expand_crop_region, mask_crop_region, CropRegion};
pub use mask_ops::{blur_mask, invert_mask};
pub use masked_fill::fill_masked_area;
pub use overlay::overlay_original;
pub use read_text::read_infotext;
pub use resize::{resize_image, resize_mask, resize_mask_bicubic, resize_rgb, ResizeMode};

#[cfg(test)]
mod tests;

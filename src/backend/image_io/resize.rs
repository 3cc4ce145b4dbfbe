//! A1111's `images.resize_image` resize modes for init images and masks.
//!
//! Resizing is Pillow's LANCZOS (see `resample.rs`), which is what A1111 uses when no img2img
//! upscaler is configured (the default, and always for `L` masks); the "Resize and fill" borders
//! use Pillow's default BICUBIC, as A1111's call there names no filter. Results are
//! byte-identical to A1111's (tests/image_io_goldens.rs).

use super::resample::{resample, Filter, Raster};
use super::ImageIoError;
use crate::backend::request::{MaskImage, RgbImage};

/// A1111 `resize_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResizeMode {
    /// 0 "Just resize": stretch to the target size, aspect ratio not kept.
    #[default]
    JustResize,
    /// 1 "Crop and resize": scale to cover the target, then centre-crop.
    CropAndResize,
    /// 2 "Resize and fill": scale to fit inside the target, centre it, and fill the two empty
    /// borders by stretching the image's outermost rows (or columns) outwards, as A1111 does.
    ResizeAndFill,
    /// 3 "Just resize (latent upscale)": A1111 resizes in latent space; in pixel space this is
    /// the same as `JustResize`, which is what this module does.
    JustResizeLatentUpscale,
}

impl ResizeMode {
    /// The mode for A1111's integer `resize_mode`, `None` for anything else.
    pub fn from_a1111(value: i64) -> Option<ResizeMode> {
        match value {
            0 => Some(ResizeMode::JustResize),
            1 => Some(ResizeMode::CropAndResize),
            2 => Some(ResizeMode::ResizeAndFill),
            3 => Some(ResizeMode::JustResizeLatentUpscale),
            _ => None,
        }
    }
}

pub(super) fn raster_of(width: u32, height: u32, channels: usize, pixels: &[u8]) -> Result<Raster, ImageIoError> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 {
        return Err(ImageIoError::InvalidImage(format!(
            "empty source image {width}x{height}"
        )));
    }
    let expected = w * h * channels;
    if pixels.len() != expected {
        return Err(ImageIoError::InvalidImage(format!(
            "{width}x{height} image with {channels} channels needs {expected} bytes, got {}",
            pixels.len()
        )));
    }
    Ok(Raster {
        width: w,
        height: h,
        channels,
        data: pixels.to_vec(),
    })
}

fn check_target(width: u32, height: u32) -> Result<(), ImageIoError> {
    if width == 0 || height == 0 {
        return Err(ImageIoError::InvalidImage(format!("cannot resize to {width}x{height}")));
    }
    Ok(())
}

/// `im.resize((w, h), LANCZOS)`.
fn resize_full(src: &Raster, width: usize, height: usize) -> Raster {
    resample(
        src,
        width,
        height,
        [0.0, 0.0, src.width as f64, src.height as f64],
        Filter::Lanczos,
    )
}

/// The body of A1111 `images.resize_image` for one raster (black canvas, like `Image.new`).
fn resize_with_mode(src: &Raster, width: usize, height: usize, mode: ResizeMode) -> Raster {
    let (w, h) = (width as u64, height as u64);
    let (src_w0, src_h0) = (src.width as u64, src.height as u64);
    // `width / height` vs `im.width / im.height`, compared exactly by cross-multiplying.
    let target_ratio_key = w * src_h0;
    let source_ratio_key = src_w0 * h;
    // Sizes derived by integer division can reach 0 for absurd aspect ratios, where Pillow
    // would raise; keep at least one pixel instead.
    let at_least_one = |v: u64| v.max(1) as usize;
    match mode {
        ResizeMode::JustResize | ResizeMode::JustResizeLatentUpscale => resize_full(src, width, height),
        ResizeMode::CropAndResize => {
            let src_w = if target_ratio_key > source_ratio_key {
                width
            } else {
                at_least_one(src_w0 * h / src_h0)
            };
            let src_h = if target_ratio_key <= source_ratio_key {
                height
            } else {
                at_least_one(src_h0 * w / src_w0)
            };
            let resized = resize_full(src, src_w, src_h);
            let mut canvas = Raster::black(width, height, src.channels);
            canvas.paste(&resized, centre_offset(width, src_w), centre_offset(height, src_h));
            canvas
        }
        ResizeMode::ResizeAndFill => {
            let src_w = if target_ratio_key < source_ratio_key {
                width
            } else {
                at_least_one(src_w0 * h / src_h0)
            };
            let src_h = if target_ratio_key >= source_ratio_key {
                height
            } else {
                at_least_one(src_h0 * w / src_w0)
            };
            let resized = resize_full(src, src_w, src_h);
            let mut canvas = Raster::black(width, height, src.channels);
            canvas.paste(&resized, centre_offset(width, src_w), centre_offset(height, src_h));
            if target_ratio_key < source_ratio_key {
                let fill_height = centre_offset(height, src_h);
                if fill_height > 0 {
                    let fill = fill_height as usize;
                    let (rw, rh) = (resized.width as f64, resized.height as f64);
                    // A1111 resizes a zero-height box at the top and bottom edge of the resized
                    // image (default BICUBIC), stretching its edge rows over the borders.
                    let top = resample(&resized, width, fill, [0.0, 0.0, rw, 0.0], Filter::Bicubic);
                    let bottom = resample(&resized, width, fill, [0.0, rh, rw, rh], Filter::Bicubic);
                    canvas.paste(&top, 0, 0);
                    canvas.paste(&bottom, 0, fill_height + src_h as i64);
                }
            } else if target_ratio_key > source_ratio_key {
                let fill_width = centre_offset(width, src_w);
                if fill_width > 0 {
                    let fill = fill_width as usize;
                    let (rw, rh) = (resized.width as f64, resized.height as f64);
                    let left = resample(&resized, fill, height, [0.0, 0.0, 0.0, rh], Filter::Bicubic);
                    let right = resample(&resized, fill, height, [rw, 0.0, rw, rh], Filter::Bicubic);
                    canvas.paste(&left, 0, 0);
                    canvas.paste(&right, fill_width + src_w as i64, 0);
                }
            }
            canvas
        }
    }
}

/// `target // 2 - placed // 2`, the paste offset A1111 uses to centre.
fn centre_offset(target: usize, placed: usize) -> i64 {
    (target / 2) as i64 - (placed / 2) as i64
}

/// Plain Lanczos resize to `width`x`height` (aspect ratio not kept).
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, ImageIoError> {
    resize_image(image, width, height, ResizeMode::JustResize)
}

/// Resize an init image to the generation size with an A1111 resize mode.
pub fn resize_image(image: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> Result<RgbImage, ImageIoError> {
    check_target(width, height)?;
    let src = raster_of(image.width, image.height, 3, &image.pixels)?;
    let out = resize_with_mode(&src, width as usize, height as usize, mode);
    Ok(RgbImage {
        width,
        height,
        pixels: out.data,
    })
}

/// Resize a mask exactly like its image (A1111 resizes the `L` mask with the same mode and
/// LANCZOS). Values in between come out soft; thresholding is the caller's business.
pub fn resize_mask(mask: &MaskImage, width: u32, height: u32, mode: ResizeMode) -> Result<MaskImage, ImageIoError> {
    check_target(width, height)?;
    let src = raster_of(mask.width, mask.height, 1, &mask.pixels)?;
    let out = resize_with_mode(&src, width as usize, height as usize, mode);
    Ok(MaskImage {
        width,
        height,
        pixels: out.data,
    })
}

/// `mask.convert('RGB').resize((width, height))`: Pillow's default filter (BICUBIC), which is
/// how A1111 brings an inpainting mask down to the latent size.
pub fn resize_mask_bicubic(mask: &MaskImage, width: u32, height: u32) -> Result<MaskImage, ImageIoError> {
    check_target(width, height)?;
    let src = raster_of(mask.width, mask.height, 1, &mask.pixels)?;
    let out = resample(&src, width as usize, height as usize, [0.0, 0.0, src.width as f64, src.height as f64], Filter::Bicubic);
    Ok(MaskImage { width, height, pixels: out.data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, 128]);
            }
        }
        RgbImage { width, height, pixels }
    }

    #[test]
    fn every_mode_produces_the_requested_size() {
        let src = gradient(300, 200);
        for mode in 0..4 {
            let mode = ResizeMode::from_a1111(mode).expect("valid mode");
            for (w, h) in [(512, 512), (256, 512), (640, 384), (64, 8)] {
                let out = resize_image(&src, w, h, mode).expect("resize");
                assert_eq!(
                    (out.width, out.height, out.pixels.len()),
                    (w, h, (w * h * 3) as usize),
                    "{mode:?}"
                );
            }
        }
        let mask = MaskImage {
            width: 30,
            height: 70,
            pixels: vec![255; 30 * 70],
        };
        for mode in 0..4 {
            let mode = ResizeMode::from_a1111(mode).expect("valid mode");
            let out = resize_mask(&mask, 64, 48, mode).expect("resize");
            assert_eq!((out.width, out.height, out.pixels.len()), (64, 48, 64 * 48));
        }
        assert_eq!(ResizeMode::from_a1111(4), None);
    }

    #[test]
    fn crop_and_resize_covers_the_canvas_and_fill_leaves_no_black_border() {
        // A uniform grey source: cropping must cover every pixel, and filling must stretch grey
        // into the borders instead of leaving the black canvas.
        let src = RgbImage {
            width: 300,
            height: 100,
            pixels: vec![90; 300 * 100 * 3],
        };
        let crop = resize_image(&src, 128, 128, ResizeMode::CropAndResize).expect("crop");
        assert!(crop.pixels.iter().all(|&v| v == 90));
        let fill = resize_image(&src, 128, 128, ResizeMode::ResizeAndFill).expect("fill");
        assert!(fill.pixels.iter().all(|&v| v == 90));
        let tall = RgbImage {
            width: 50,
            height: 200,
            pixels: vec![40; 50 * 200 * 3],
        };
        let fill = resize_image(&tall, 128, 64, ResizeMode::ResizeAndFill).expect("fill");
        assert!(fill.pixels.iter().all(|&v| v == 40));
    }

    #[test]
    fn resize_and_fill_stretches_the_edge_rows() {
        // A wide image with a red top row and a blue bottom row, fitted into a square: the top
        // border comes from the top edge (red-ish), the bottom border from the bottom edge.
        let (w, h) = (64u32, 16u32);
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        for x in 0..w as usize {
            pixels[x * 3] = 255;
            pixels[((h as usize - 1) * w as usize + x) * 3 + 2] = 255;
        }
        let out = resize_image(
            &RgbImage {
                width: w,
                height: h,
                pixels,
            },
            64,
            64,
            ResizeMode::ResizeAndFill,
        )
        .expect("fill");
        let px = |x: usize, y: usize| &out.pixels[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        assert!(px(10, 0)[0] > 200 && px(10, 0)[2] == 0, "top border {:?}", px(10, 0));
        assert!(
            px(10, 63)[2] > 200 && px(10, 63)[0] == 0,
            "bottom border {:?}",
            px(10, 63)
        );
    }

    #[test]
    fn crop_and_resize_keeps_the_centre() {
        // 3 vertical bands (left black, middle white, right black) of a 300x100 image cropped to
        // a square keep only the white middle band.
        let mut pixels = vec![0u8; 300 * 100 * 3];
        for y in 0..100 {
            for x in 100..200 {
                pixels[(y * 300 + x) * 3..(y * 300 + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let out = resize_image(
            &RgbImage {
                width: 300,
                height: 100,
                pixels,
            },
            100,
            100,
            ResizeMode::CropAndResize,
        )
        .expect("crop");
        assert!(out.pixels.iter().all(|&v| v == 255));
    }

    #[test]
    fn invalid_sizes_are_errors_not_panics() {
        let src = gradient(4, 4);
        assert!(matches!(
            resize_image(&src, 0, 4, ResizeMode::JustResize),
            Err(ImageIoError::InvalidImage(_))
        ));
        let broken = RgbImage {
            width: 4,
            height: 4,
            pixels: vec![0; 5],
        };
        assert!(matches!(
            resize_image(&broken, 8, 8, ResizeMode::JustResize),
            Err(ImageIoError::InvalidImage(_))
        ));
    }
}

//! A1111's "Only masked" crop region (`masking.get_crop_region_v2` and `expand_crop_region`):
//! the mask's bounding box grown by the padding, then grown along one axis towards the
//! processing size's aspect ratio, shifted back inside the image where it sticks out.

use super::ImageIoError;
use crate::backend::request::{MaskImage, RgbImage};

/// A PIL box: `x1..x2` × `y1..y2`, right and bottom exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRegion {
    pub x1: u32,
    pub y1: u32,
    pub x2: u32,
    pub y2: u32,
}

impl CropRegion {
    pub fn width(&self) -> u32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> u32 {
        self.y2 - self.y1
    }
}

/// `get_crop_region_v2(mask, pad)`: the bounding box of the mask's non-zero pixels (PIL
/// `getbbox`) grown by `padding` on every side and clipped to the mask; `None` for a blank mask.
pub fn mask_crop_region(mask: &MaskImage, padding: u32) -> Option<CropRegion> {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for (i, _) in mask.pixels.iter().enumerate().filter(|(_, &v)| v != 0) {
        let (x, y) = (i % w.max(1), i / w.max(1));
        bbox = Some(match bbox {
            None => (x, y, x + 1, y + 1),
            Some((x1, y1, x2, y2)) => (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1)),
        });
    }
    let (x1, y1, x2, y2) = bbox?;
    let pad = padding as usize;
    Some(CropRegion {
        x1: x1.saturating_sub(pad) as u32,
        y1: y1.saturating_sub(pad) as u32,
        x2: (x2 + pad).min(w) as u32,
        y2: (y2 + pad).min(h) as u32,
    })
}

/// One axis of `expand_crop_region`: grow `lo..hi` by `diff` (half before, the rest after),
/// then shift it back inside `0..len` and clip, in A1111's order of checks.
fn expand_axis(lo: i64, hi: i64, diff: i64, len: i64) -> (i64, i64) {
    let (mut lo, mut hi) = (lo - diff.div_euclid(2), hi + (diff - diff.div_euclid(2)));
    if hi >= len {
        let over = hi - len;
        hi -= over;
        lo -= over;
    }
    if lo < 0 {
        hi -= lo;
        lo = 0;
    }
    if hi >= len {
        hi = len;
    }
    (lo, hi)
}

/// `expand_crop_region(crop_region, processing_width, processing_height, image_width,
/// image_height)`, with Python's float ratios and `int()` truncation.
pub fn expand_crop_region(region: CropRegion, processing_width: u32, processing_height: u32, image_width: u32, image_height: u32) -> CropRegion {
    let (x1, y1, x2, y2) = (i64::from(region.x1), i64::from(region.y1), i64::from(region.x2), i64::from(region.y2));
    let ratio_crop_region = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio_processing = f64::from(processing_width) / f64::from(processing_height);
    let (x1, y1, x2, y2) = if ratio_crop_region > ratio_processing {
        let desired_height = (x2 - x1) as f64 / ratio_processing;
        let diff = (desired_height - (y2 - y1) as f64) as i64;
        let (y1, y2) = expand_axis(y1, y2, diff, i64::from(image_height));
        (x1, y1, x2, y2)
    } else {
        let desired_width = (y2 - y1) as f64 * ratio_processing;
        let diff = (desired_width - (x2 - x1) as f64) as i64;
        let (x1, x2) = expand_axis(x1, x2, diff, i64::from(image_width));
        (x1, y1, x2, y2)
    };
    // The shifts keep the box inside the image; clamping only guards the conversion.
    let to_u32 = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
    CropRegion { x1: to_u32(x1), y1: to_u32(y1), x2: to_u32(x2), y2: to_u32(y2) }
}

fn check_region(what: &str, width: u32, height: u32, region: CropRegion) -> Result<(), ImageIoError> {
    if region.x1 >= region.x2 || region.y1 >= region.y2 || region.x2 > width || region.y2 > height {
        return Err(ImageIoError::InvalidImage(format!("crop region {region:?} is not inside the {width}x{height} {what}")));
    }
    Ok(())
}

fn crop_rows(pixels: &[u8], width: u32, channels: usize, region: CropRegion) -> Vec<u8> {
    let row = width as usize * channels;
    let (from, to) = (region.x1 as usize * channels, region.x2 as usize * channels);
    pixels.chunks_exact(row).skip(region.y1 as usize).take(region.height() as usize).flat_map(|r| r[from..to].iter().copied()).collect()
}

/// `image.crop(region)` for a region inside the image.
pub fn crop_rgb(image: &RgbImage, region: CropRegion) -> Result<RgbImage, ImageIoError> {
    check_region("image", image.width, image.height, region)?;
    Ok(RgbImage { width: region.width(), height: region.height(), pixels: crop_rows(&image.pixels, image.width, 3, region) })
}

/// `mask.crop(region)` for a region inside the mask.
pub fn crop_mask(mask: &MaskImage, region: CropRegion) -> Result<MaskImage, ImageIoError> {
    check_region("mask", mask.width, mask.height, region)?;
    Ok(MaskImage { width: region.width(), height: region.height(), pixels: crop_rows(&mask.pixels, mask.width, 1, region) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_with_box(w: u32, h: u32, bx: (u32, u32, u32, u32)) -> MaskImage {
        let pixels = (0..h).flat_map(|y| (0..w).map(move |x| if (bx.0..bx.2).contains(&x) && (bx.1..bx.3).contains(&y) { 255 } else { 0 })).collect();
        MaskImage { width: w, height: h, pixels }
    }

    fn region(x1: u32, y1: u32, x2: u32, y2: u32) -> CropRegion {
        CropRegion { x1, y1, x2, y2 }
    }

    #[test]
    fn bounding_box_grows_by_the_padding_and_stays_inside() {
        let mask = mask_with_box(100, 80, (10, 20, 30, 25));
        assert_eq!(mask_crop_region(&mask, 0), Some(region(10, 20, 30, 25)));
        assert_eq!(mask_crop_region(&mask, 5), Some(region(5, 15, 35, 30)));
        assert_eq!(mask_crop_region(&mask, 32), Some(region(0, 0, 62, 57)));
        // Any non-zero value counts (a blurred edge of 1 widens the box).
        let mut soft = mask.clone();
        soft.pixels[79 * 100 + 99] = 1;
        assert_eq!(mask_crop_region(&soft, 0), Some(region(10, 20, 100, 80)));
        assert_eq!(mask_crop_region(&mask_with_box(8, 8, (0, 0, 0, 0)), 4), None);
    }

    #[test]
    fn expansion_follows_a1111_formulas() {
        // 128x32 box for 512x512: ratio 4 > 1, desired_height = 128, diff = 96 -> y1 - 48, y2 + 48.
        assert_eq!(expand_crop_region(region(100, 200, 228, 232), 512, 512, 1024, 1024), region(100, 152, 228, 280));
        // Off the bottom: y2 = 280 > 256 -> shifted up by 24: (128, 256).
        assert_eq!(expand_crop_region(region(100, 200, 228, 232), 512, 512, 1024, 256), region(100, 128, 228, 256));
        // Taller than wide, 512x768 processing (ratio 2/3): 20x60 box, desired_width = 40.0,
        // diff = 20 -> x1 - 10, x2 + 10; off the left edge (x1 = -7) -> shifted right by 7.
        assert_eq!(expand_crop_region(region(3, 10, 23, 70), 512, 768, 200, 100), region(0, 10, 40, 70));
        // Odd diff: 10x7 box at 1:1 -> ratio 10/7 > 1, desired_height = 10, diff = 3 -> y1 - 1, y2 + 2.
        assert_eq!(expand_crop_region(region(5, 5, 15, 12), 64, 64, 64, 64), region(5, 4, 15, 14));
        // Truncation: 7x3 box at 3:2 -> ratio 7/3 > 1.5, desired_height = 4.666.., diff = int(1.666..) = 1.
        assert_eq!(expand_crop_region(region(0, 10, 7, 13), 96, 64, 64, 64), region(0, 10, 7, 14));
        // Bigger than the image: shifted to 0, then clipped to the image height.
        assert_eq!(expand_crop_region(region(0, 2, 40, 6), 64, 64, 40, 20), region(0, 0, 40, 20));
    }

    #[test]
    fn crops_copy_the_region() {
        let image = RgbImage { width: 3, height: 2, pixels: (0..18).collect() };
        let cropped = crop_rgb(&image, region(1, 1, 3, 2)).expect("crop");
        assert_eq!((cropped.width, cropped.height, cropped.pixels), (2, 1, vec![12, 13, 14, 15, 16, 17]));
        assert!(crop_rgb(&image, region(1, 1, 4, 2)).is_err());
        let mask = MaskImage { width: 3, height: 2, pixels: (0..6).collect() };
        assert_eq!(crop_mask(&mask, region(0, 0, 2, 2)).expect("crop").pixels, vec![0, 1, 3, 4]);
    }
}

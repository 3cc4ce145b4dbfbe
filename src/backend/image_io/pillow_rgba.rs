//! The Pillow RGBA operations A1111's inpainting runs on PIL images, reproduced with Pillow's
//! integer arithmetic so results match byte for byte: pasting through an `L` mask into a
//! premultiplied (`RGBa`) canvas, un-premultiplying (`RGBa` → `RGBA`), `alpha_composite`, and
//! `ImageFilter.GaussianBlur` (three box-blur passes per axis, `ImagingGaussianBlur`).

use crate::backend::request::{MaskImage, RgbImage};

/// Row-major 4-channel pixels; whether they are premultiplied is the caller's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgba {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[u8; 4]>,
}

/// Pillow's `DIV255` (`(a + 128) * 257 >> 16`, exact for the products it is used on).
fn div255(a: u32) -> u32 {
    let tmp = a + 128;
    ((tmp >> 8) + tmp) >> 8
}

/// `Image.new('RGBa', size)` then `paste(image.convert('RGBA').convert('RGBa'),
/// mask=ImageOps.invert(mask))`: every channel, alpha included, times `255 - mask` / 255. An
/// opaque image's premultiplied form is itself, so the result is premultiplied with alpha
/// `255 - mask`.
pub fn premultiplied_outside_mask(image: &RgbImage, mask: &MaskImage) -> Rgba {
    let pixels = image
        .pixels
        .chunks_exact(3)
        .zip(&mask.pixels)
        .map(|(rgb, &m)| {
            let keep = 255 - u32::from(m);
            let c = |v: u8| div255(u32::from(v) * keep) as u8;
            [c(rgb[0]), c(rgb[1]), c(rgb[2]), keep as u8]
        })
        .collect();
    Rgba { width: image.width as usize, height: image.height as usize, pixels }
}

/// `convert('RGBA')` of an `RGBa` image (Pillow's `rgba2rgbA`): colours divided by alpha,
/// truncating, unless alpha is 0 or 255.
pub fn unpremultiply(image: &Rgba) -> Rgba {
    let pixels = image
        .pixels
        .iter()
        .map(|&[r, g, b, a]| {
            if a == 0 || a == 255 {
                [r, g, b, a]
            } else {
                let c = |v: u8| (255 * u32::from(v) / u32::from(a)).min(255) as u8;
                [c(r), c(g), c(b), a]
            }
        })
        .collect();
    Rgba { width: image.width, height: image.height, pixels }
}

/// An opaque RGBA copy of an RGB image (`convert('RGBA')`).
pub fn opaque(image: &RgbImage) -> Rgba {
    let pixels = image.pixels.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]).collect();
    Rgba { width: image.width as usize, height: image.height as usize, pixels }
}

/// The colour channels (`convert('RGB')`).
pub fn to_rgb(image: &Rgba) -> RgbImage {
    let pixels = image.pixels.iter().flat_map(|p| [p[0], p[1], p[2]]).collect();
    RgbImage { width: image.width as u32, height: image.height as u32, pixels }
}

/// `dst.alpha_composite(src)` for same-size images (Pillow's `ImagingAlphaComposite`, with its
/// 7 extra bits of precision and rounded divisions).
pub fn alpha_composite(dst: &mut Rgba, src: &Rgba) {
    const PRECISION_BITS: u32 = 7;
    let shift_div255 = |a: u32| ((a >> 8) + a) >> 8;
    for (d, s) in dst.pixels.iter_mut().zip(&src.pixels) {
        if s[3] == 0 {
            continue;
        }
        let (sa, da) = (u32::from(s[3]), u32::from(d[3]));
        let blend = da * (255 - sa);
        let outa255 = sa * 255 + blend;
        let coef1 = sa * 255 * 255 * (1 << PRECISION_BITS) / outa255;
        let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
        let channel = |sc: u8, dc: u8| {
            let tmp = u32::from(sc) * coef1 + u32::from(dc) * coef2;
            (shift_div255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
        };
        *d = [channel(s[0], d[0]), channel(s[1], d[1]), channel(s[2], d[2]), shift_div255(outa255 + 0x80) as u8];
    }
}

/// Pillow's `_gaussian_blur_radius`: the (fractional) box radius whose `passes` repetitions
/// approximate a Gaussian of standard deviation `radius`, computed in C `float` as Pillow does.
fn box_radius(radius: f32, passes: u32) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let big_l = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(big_l) - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// One pass of Pillow's `ImagingLineBoxBlur32` over a line of 4-channel pixels: a box of
/// `2 * radius + 1` whole pixels plus the two next ones weighted by the fractional part, edge
/// pixels repeated outwards, in 8.24 fixed point.
fn box_blur_line(line: &[[u8; 4]], out: &mut [[u8; 4]], float_radius: f32) {
    let radius = float_radius as i64;
    let ww = ((1u32 << 24) as f32 / (float_radius * 2.0 + 1.0)) as u64;
    let fw = ((1u64 << 24) - (radius as u64 * 2 + 1) * ww) / 2;
    let last = line.len() as i64 - 1;
    let at = |i: i64| &line[i.clamp(0, last) as usize];
    for c in 0..4 {
        // The window of "pixel -1": indices -radius-1 ..= radius-1, clamped to the line.
        let mut acc: u64 = (-radius - 1..radius).map(|i| u64::from(at(i)[c])).sum();
        for (x, out_px) in out.iter_mut().enumerate() {
            let x = x as i64;
            acc = acc + u64::from(at(x + radius)[c]) - u64::from(at(x - radius - 1)[c]);
            let bulk = acc * ww + (u64::from(at(x - radius - 1)[c]) + u64::from(at(x + radius + 1)[c])) * fw;
            out_px[c] = ((bulk + (1 << 23)) >> 24) as u8;
        }
    }
}

/// `image.filter(ImageFilter.GaussianBlur(radius))` (3 box passes along x, then 3 along y).
pub fn gaussian_blur(image: &Rgba, radius: f32) -> Rgba {
    let box_r = box_radius(radius, 3);
    if box_r == 0.0 {
        return image.clone();
    }
    let (w, h) = (image.width, image.height);
    let mut pixels = image.pixels.clone();
    let mut line_out = vec![[0u8; 4]; w.max(h)];
    for _ in 0..3 {
        for row in pixels.chunks_exact_mut(w) {
            box_blur_line(row, &mut line_out[..w], box_r);
            row.copy_from_slice(&line_out[..w]);
        }
    }
    let mut column = vec![[0u8; 4]; h];
    for x in 0..w {
        for (y, px) in column.iter_mut().enumerate() {
            *px = pixels[y * w + x];
        }
        for _ in 0..3 {
            box_blur_line(&column, &mut line_out[..h], box_r);
            column.copy_from_slice(&line_out[..h]);
        }
        for (y, px) in column.iter().enumerate() {
            pixels[y * w + x] = *px;
        }
    }
    Rgba { width: w, height: h, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::image_io::{decode_rgb, decode_rgba, DEFAULT_MAX_PIXELS};

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/image_io/");
        std::fs::read(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn box_radius_is_pillows() {
        // sigma2 = 4/3, L = sqrt(17) = 4.1231, l = 1, a = 3 * (2 - 4) / (6 * (4/3 - 4)) = 0.375.
        assert!((box_radius(2.0, 3) - 1.375).abs() < 1e-6);
        assert_eq!(box_radius(0.0, 3), 0.0);
    }

    #[test]
    fn gaussian_blur_of_premultiplied_pixels_matches_pillow() {
        let image = decode_rgb(&fixture("inpaint_image.png"), DEFAULT_MAX_PIXELS).expect("image");
        let mask = decode_rgb(&fixture("inpaint_mask.png"), DEFAULT_MAX_PIXELS).expect("mask");
        let mask = MaskImage { width: mask.width, height: mask.height, pixels: mask.pixels.chunks(3).map(|p| p[0]).collect() };
        let masked = premultiplied_outside_mask(&image, &mask);
        for radius in [2u32, 16, 256] {
            let golden = decode_rgba(&fixture(&format!("inpaint_blur{radius}.png")), DEFAULT_MAX_PIXELS).expect("golden");
            let ours: Vec<u8> = unpremultiply(&gaussian_blur(&masked, radius as f32)).pixels.concat();
            let differing = ours.iter().zip(&golden.pixels).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "radius {radius}");
        }
    }
}

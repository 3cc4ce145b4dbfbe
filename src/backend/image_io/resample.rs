//! Pillow's two-pass convolution resampling of 8-bit interleaved pixels (LANCZOS and BICUBIC),
//! reproduced to the bit: the same coefficient windows, the same 22-bit fixed-point weights, the
//! same rounding and clipping.
//!
//! Why not `image::imageops::resize`: A1111 resizes every init image and mask with
//! `PIL.Image.resize(size, LANCZOS)`, and its "Resize and fill" borders come from resampling a
//! zero-height (or zero-width) source box with Pillow's default BICUBIC, which only a box-aware
//! resampler can express. With Pillow's arithmetic our img2img inputs are byte-identical to
//! A1111's for the same source.

use rayon::prelude::*;

/// Pillow's `PRECISION_BITS` for 8-bit images (32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Pillow's convolution filters that A1111's resizing uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `Image.LANCZOS`: Lanczos-3.
    Lanczos,
    /// `Image.BICUBIC` (Pillow's default for `resize`): Keys cubic with a = -0.5.
    Bicubic,
}

impl Filter {
    /// Kernel half-width at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Lanczos => lanczos(x),
            Filter::Bicubic => bicubic(x),
        }
    }
}

/// An interleaved 8-bit raster: `channels` bytes per pixel, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raster {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Raster {
    /// An all-zero (black) raster, like `Image.new("RGB", size)`.
    pub fn black(width: usize, height: usize, channels: usize) -> Raster {
        Raster {
            width,
            height,
            channels,
            data: vec![0; width * height * channels],
        }
    }

    /// `Image.paste(top, box=(x, y))`: copies `top` with its top-left corner at (x, y), clipping
    /// whatever falls outside (negative offsets crop, as A1111's "Crop and resize" relies on).
    pub fn paste(&mut self, top: &Raster, x: i64, y: i64) {
        debug_assert_eq!(self.channels, top.channels);
        let ch = self.channels;
        let x0 = x.max(0);
        let x1 = (x + top.width as i64).min(self.width as i64);
        let y0 = y.max(0);
        let y1 = (y + top.height as i64).min(self.height as i64);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let run = (x1 - x0) as usize * ch;
        for dst_y in y0..y1 {
            let src_y = (dst_y - y) as usize;
            let src_start = (src_y * top.width + (x0 - x) as usize) * ch;
            let dst_start = (dst_y as usize * self.width + x0 as usize) * ch;
            self.data[dst_start..dst_start + run].copy_from_slice(&top.data[src_start..src_start + run]);
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Pillow's `lanczos_filter`: truncated sinc, half-open on the right like Pillow's.
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `bicubic_filter` (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output position: the first source index, how many source samples, and their fixed-point
/// weights (`ksize` slots each, unused ones zero).
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i64>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for source box
/// `[in0, in1)` of an axis with `in_size` samples mapped onto `out_size` samples.
fn precompute_coefficients(filter: Filter, in_size: usize, in0: f64, in1: f64, out_size: usize) -> Coefficients {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i64; out_size * ksize];
    let mut window = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `as` truncates toward zero exactly like the C `(int)` cast Pillow uses to round.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let count = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let mut total = 0.0;
        for (x, slot) in window.iter_mut().enumerate().take(count) {
            let w = filter.weight(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *slot = w;
            total += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, fixed) in row.iter_mut().enumerate().take(count) {
            let k = if total != 0.0 { window[x] / total } else { window[x] };
            let scaled = k * f64::from(1u32 << PRECISION_BITS);
            *fixed = if k < 0.0 {
                (scaled - 0.5) as i64
            } else {
                (scaled + 0.5) as i64
            };
        }
        bounds.push((xmin as usize, count));
    }
    Coefficients { ksize, bounds, weights }
}

/// Pillow's `clip8`: drop the fraction (arithmetic shift, i.e. floor) and clamp to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over source rows `first_row..first_row + rows`.
fn resample_horizontal(src: &Raster, first_row: usize, rows: usize, out_width: usize, c: &Coefficients) -> Raster {
    let ch = src.channels;
    let mut out = Raster::black(out_width, rows, ch);
    if out_width == 0 {
        return out;
    }
    out.data
        .par_chunks_mut(out_width * ch)
        .enumerate()
        .for_each(|(yy, out_row)| {
            let src_row = &src.data[(yy + first_row) * src.width * ch..(yy + first_row + 1) * src.width * ch];
            for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + count];
                for channel in 0..ch {
                    let mut acc = ROUNDING;
                    for (x, &w) in k.iter().enumerate() {
                        acc += i64::from(src_row[(x + xmin) * ch + channel]) * w;
                    }
                    out_row[xx * ch + channel] = clip8(acc);
                }
            }
        });
    out
}

/// Vertical pass; `c.bounds` index rows of `src`.
fn resample_vertical(src: &Raster, out_height: usize, c: &Coefficients) -> Raster {
    let ch = src.channels;
    let row_len = src.width * ch;
    let mut out = Raster::black(src.width, out_height, ch);
    if row_len == 0 {
        return out;
    }
    out.data.par_chunks_mut(row_len).enumerate().for_each(|(yy, out_row)| {
        let (ymin, count) = c.bounds[yy];
        let k = &c.weights[yy * c.ksize..yy * c.ksize + count];
        for (i, out_value) in out_row.iter_mut().enumerate() {
            let mut acc = ROUNDING;
            for (y, &w) in k.iter().enumerate() {
                acc += i64::from(src.data[(y + ymin) * row_len + i]) * w;
            }
            *out_value = clip8(acc);
        }
    });
    out
}

/// `Image.resize((out_width, out_height), filter, box=source_box)` with `source_box` =
/// (left, upper, right, lower) in source pixels. Callers guarantee non-empty rasters, output
/// sizes >= 1 and a box inside the source (Pillow raises otherwise); a zero-width or zero-height
/// box is allowed and resamples the edge, as Pillow does.
pub(crate) fn resample(
    src: &Raster,
    out_width: usize,
    out_height: usize,
    source_box: [f64; 4],
    filter: Filter,
) -> Raster {
    let [left, upper, right, lower] = source_box;
    let need_horizontal = out_width != src.width || left != 0.0 || right != out_width as f64;
    let need_vertical = out_height != src.height || upper != 0.0 || lower != out_height as f64;
    let horizontal = precompute_coefficients(filter, src.width, left, right, out_width);
    let mut vertical = precompute_coefficients(filter, src.height, upper, lower, out_height);

    // Pillow only runs the horizontal pass over the rows the vertical pass will read.
    let first_row = vertical.bounds.first().map_or(0, |b| b.0);
    let last_row = vertical.bounds.last().map_or(0, |b| b.0 + b.1);

    let mut current = None;
    if need_horizontal {
        for bound in &mut vertical.bounds {
            bound.0 -= first_row;
        }
        current = Some(resample_horizontal(
            src,
            first_row,
            last_row - first_row,
            out_width,
            &horizontal,
        ));
    }
    if need_vertical {
        let input = current.as_ref().unwrap_or(src);
        return resample_vertical(input, out_height, &vertical);
    }
    current.unwrap_or_else(|| src.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_full_box_is_identity() {
        let src = Raster {
            width: 3,
            height: 2,
            channels: 1,
            data: vec![0, 50, 100, 150, 200, 250],
        };
        assert_eq!(resample(&src, 3, 2, [0.0, 0.0, 3.0, 2.0], Filter::Lanczos), src);
    }

    #[test]
    fn constant_image_stays_constant_when_scaled() {
        let src = Raster {
            width: 7,
            height: 5,
            channels: 3,
            data: vec![77; 7 * 5 * 3],
        };
        for filter in [Filter::Lanczos, Filter::Bicubic] {
            let up = resample(&src, 19, 11, [0.0, 0.0, 7.0, 5.0], filter);
            assert!(up.data.iter().all(|&v| v == 77));
            let down = resample(&src, 2, 3, [0.0, 0.0, 7.0, 5.0], filter);
            assert!(down.data.iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn fixed_point_weights_match_pillow_for_a_2x_upscale() {
        // Upscaling 4 -> 8: output 0 has its center at 0.25, window (int)(-2.25) -> 0 up to
        // (int)(3.75) = 3, and source pixel x (center x + 0.5) gets lanczos(x + 0.5 - 0.25).
        let c = precompute_coefficients(Filter::Lanczos, 4, 0.0, 4.0, 8);
        assert_eq!(c.ksize, 7);
        assert_eq!(c.bounds[0], (0, 3));
        let raw = [lanczos(0.25), lanczos(1.25), lanczos(2.25)];
        let total: f64 = raw.iter().sum();
        for (i, r) in raw.iter().enumerate() {
            let k = r / total * f64::from(1u32 << 22);
            let expected = if k < 0.0 { (k - 0.5) as i64 } else { (k + 0.5) as i64 };
            assert_eq!(c.weights[i], expected);
        }
    }

    #[test]
    fn zero_height_box_extrapolates_from_the_edge_rows() {
        // A column 10, 30, 70, 80, 90. BICUBIC on the zero-height box at the top samples rows 0
        // and 1 with bicubic(0.5) = 0.5625 and bicubic(1.5) = -0.0625, normalized to 1.125 and
        // -0.125: 10 * 1.125 - 30 * 0.125 = 7.5 -> 8 (Pillow rounds half up).
        let src = Raster {
            width: 1,
            height: 5,
            channels: 1,
            data: vec![10, 30, 70, 80, 90],
        };
        let top = resample(&src, 1, 2, [0.0, 0.0, 1.0, 0.0], Filter::Bicubic);
        assert_eq!(top.data, vec![8, 8]);
        // Bottom: 90 * 1.125 - 80 * 0.125 = 91.25 -> 91.
        let bottom = resample(&src, 1, 1, [0.0, 5.0, 1.0, 5.0], Filter::Bicubic);
        assert_eq!(bottom.data, vec![91]);
        // LANCZOS reaches three rows: lanczos(0.5), lanczos(1.5), lanczos(2.5) normalized to
        // 1.2228, -0.2717, 0.0489: 10, 20, 30 -> 8.26 -> 8.
        let src = Raster {
            width: 1,
            height: 3,
            channels: 1,
            data: vec![10, 20, 30],
        };
        let w = [lanczos(0.5), lanczos(1.5), lanczos(2.5)];
        let total: f64 = w.iter().sum();
        let expected = (10.0 * w[0] + 20.0 * w[1] + 30.0 * w[2]) / total;
        assert!((expected - 8.26).abs() < 0.01, "{expected}");
        let top = resample(&src, 1, 1, [0.0, 0.0, 1.0, 0.0], Filter::Lanczos);
        assert_eq!(top.data, vec![8]);
    }

    #[test]
    fn paste_clips_negative_offsets() {
        let mut canvas = Raster::black(2, 2, 1);
        let top = Raster {
            width: 3,
            height: 3,
            channels: 1,
            data: (1..=9).collect(),
        };
        canvas.paste(&top, -1, -1);
        assert_eq!(canvas.data, vec![5, 6, 8, 9]);
    }
}

//! `size`: what the client gets back, and the size the model generates at to make it.
//!
//! The reply always has exactly the size asked for. The model generates at the same aspect
//! ratio, at a pixel count it handles well (half to one and a half times its native area: far
//! above it SD models repeat subjects, far below they fall apart), with both sides on the model's
//! grid; the faces then resize to the exact request.

use crate::backend::generation_engine::ModelInfo;
use crate::backend::request_limits::RequestLimits;
use crate::http::openai::errors::OpenAiError;

/// Smallest and largest side of a returned image (OpenAI's largest, gpt-image-2's 3840, fits).
pub const MIN_OUTPUT_SIDE: u32 = 16;
pub const MAX_OUTPUT_SIDE: u32 = 4096;

/// Generated pixel count, as a share of the model's native area.
const MIN_AREA_SHARE: f64 = 0.5;
const MAX_AREA_SHARE: f64 = 1.5;

/// The `size` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedSize {
    /// `auto` or absent: the endpoint's natural size (native for generations, the input image's
    /// for edits and variations).
    Auto,
    Exact {
        width: u32,
        height: u32,
    },
}

/// Parse `auto` or `WIDTHxHEIGHT` within the output limits.
pub fn parse_size(text: Option<&str>) -> Result<RequestedSize, OpenAiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(RequestedSize::Auto);
    };
    if text.eq_ignore_ascii_case("auto") {
        return Ok(RequestedSize::Auto);
    }
    let invalid = |why: String| OpenAiError::invalid_param("size", "invalid_size", why);
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| invalid(format!("size '{text}' is not valid; use WIDTHxHEIGHT (e.g. 1024x1024, 1536x1024) or auto")))?;
    let side = |s: &str| s.trim().parse::<u32>().ok();
    let (Some(width), Some(height)) = (side(w), side(h)) else {
        return Err(invalid(format!("size '{text}' is not valid; use WIDTHxHEIGHT (e.g. 1024x1024, 1536x1024) or auto")));
    };
    for value in [width, height] {
        if !(MIN_OUTPUT_SIDE..=MAX_OUTPUT_SIDE).contains(&value) {
            return Err(invalid(format!(
                "size '{text}' is not supported: each side must be between {MIN_OUTPUT_SIDE} and {MAX_OUTPUT_SIDE} pixels"
            )));
        }
    }
    Ok(RequestedSize::Exact { width, height })
}

/// Scale `(width, height)` down (keeping its aspect) until it fits the output limits; used for
/// sizes taken from input images.
pub fn fit_output(width: u32, height: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    let scale = (f64::from(MAX_OUTPUT_SIDE) / f64::from(longest)).min(1.0);
    let fit = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(MIN_OUTPUT_SIDE, MAX_OUTPUT_SIDE);
    (fit(width), fit(height))
}

/// Scale `(width, height)` down (keeping its aspect) until it fits the worker's limits on sides
/// and total pixels; for sizes the client did not choose (`auto`).
pub fn fit_limits(width: u32, height: u32, limits: &RequestLimits) -> (u32, u32) {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let by_side = f64::from(limits.max_side) / w.max(h);
    let by_area = (limits.max_pixels as f64 / (w * h)).sqrt();
    let scale = by_side.min(by_area).min(1.0);
    let fit = |v: f64| ((v * scale).floor() as u32).max(MIN_OUTPUT_SIDE);
    (fit(w), fit(h))
}

/// The size to generate at for an output of `width` x `height`.
pub fn generation_size(width: u32, height: u32, model: &ModelInfo, limits: &RequestLimits) -> (u32, u32) {
    let grid = lcm(model.size_multiple.max(1), limits.side_multiple.max(1));
    let min_side = limits.min_side.div_ceil(grid) * grid;
    let max_side = (limits.max_side / grid * grid).max(min_side);
    let native_area = f64::from(model.native_size) * f64::from(model.native_size);
    let area = f64::from(width) * f64::from(height);
    // Never above the worker's pixel limit, whatever the model's native size.
    let target = area.clamp(native_area * MIN_AREA_SHARE, native_area * MAX_AREA_SHARE).min(limits.max_pixels as f64);
    let scale = (target / area).sqrt();
    let snap = |v: u32| {
        let cells = (f64::from(v) * scale / f64::from(grid)).round().max(1.0) as u32;
        (cells * grid).clamp(min_side, max_side)
    };
    (snap(width), snap(height))
}

/// A model description for unit tests.
#[cfg(test)]
pub(crate) fn test_model_info(native_size: u32, size_multiple: u32, default_steps: u32) -> ModelInfo {
    ModelInfo {
        id: "test".into(),
        name: "test".into(),
        hash: None,
        family: "sd",
        native_size,
        size_multiple,
        default_steps,
        default_cfg_scale: 7.5,
        inpainting: false,
    }
}

fn lcm(a: u32, b: u32) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(native: u32, multiple: u32) -> ModelInfo {
        test_model_info(native, multiple, 20)
    }

    #[test]
    fn sizes_parse_or_name_the_field() {
        assert_eq!(parse_size(None).ok(), Some(RequestedSize::Auto));
        assert_eq!(parse_size(Some("auto")).ok(), Some(RequestedSize::Auto));
        assert_eq!(parse_size(Some("1536x1024")).ok(), Some(RequestedSize::Exact { width: 1536, height: 1024 }));
        assert_eq!(parse_size(Some("100X60")).ok(), Some(RequestedSize::Exact { width: 100, height: 60 }));
        for bad in ["512", "axb", "0x512", "8192x8192", "12x12", "-5x5", "1024x"] {
            let err = parse_size(Some(bad)).expect_err(bad);
            assert_eq!((err.status.as_u16(), err.param.as_deref(), err.code.as_deref()), (400, Some("size"), Some("invalid_size")));
        }
    }

    #[test]
    fn native_sizes_generate_as_they_are() {
        let limits = RequestLimits::default();
        assert_eq!(generation_size(512, 512, &model(512, 8), &limits), (512, 512));
        assert_eq!(generation_size(1024, 1024, &model(1024, 8), &limits), (1024, 1024));
        assert_eq!(generation_size(64, 64, &model(64, 4), &limits), (64, 64));
    }

    #[test]
    fn far_off_sizes_keep_their_aspect_near_the_native_area_on_the_grid() {
        let limits = RequestLimits::default();
        // SD 1.5 (512 native, 64 grid): 1024² is generated at 1.5x the native area.
        assert_eq!(generation_size(1024, 1024, &model(512, 64), &limits), (640, 640));
        // SDXL: 1792x1024 keeps 7:4 at ~1.5 Mpx.
        let (w, h) = generation_size(1792, 1024, &model(1024, 8), &limits);
        assert!((f64::from(w) / f64::from(h) - 1.75).abs() < 0.02, "{w}x{h}");
        assert!(w % 8 == 0 && h % 8 == 0 && f64::from(w * h) <= 1.52 * 1024.0 * 1024.0, "{w}x{h}");
        // Tiny sizes on SD 1.5 are generated larger, never below the limits' minimum side.
        assert_eq!(generation_size(256, 256, &model(512, 64), &limits), (384, 384));
        assert_eq!(generation_size(16, 4000, &model(512, 8), &limits), (64, 2048));
    }

    #[test]
    fn auto_sizes_fit_the_worker_limits() {
        let limits = RequestLimits { max_side: 1024, max_pixels: 512 * 512, ..RequestLimits::default() };
        assert_eq!(fit_limits(512, 512, &limits), (512, 512));
        assert_eq!(fit_limits(2048, 1024, &limits), (724, 362));
        assert_eq!(fit_limits(4000, 100, &limits), (1024, 25));
    }

    #[test]
    fn input_sizes_are_fitted_into_the_output_limits() {
        assert_eq!(fit_output(800, 600), (800, 600));
        assert_eq!(fit_output(8192, 4096), (4096, 2048));
        assert_eq!(fit_output(4, 4), (16, 16));
    }
}

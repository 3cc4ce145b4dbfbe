//! txt2img's hires fix translated for the engine: A1111's target size rules
//! (`StableDiffusionProcessingTxt2Img.calculate_target_resolution`), its upscaler names, and the
//! `extra_generation_params` it reports.

use axum::http::StatusCode;

use super::errors::A1111Error;
use super::generation::nearest_multiple;
use super::lists::{BUILTIN_UPSCALERS, LATENT_UPSCALE_MODES};
use super::request_model::Txt2ImgRequest;
use super::response::OrderedObject;
use super::samplers::resolve;
use crate::backend::request::{HiresPass, HiresSizeRequest, HiresUpscaler, ImageInterpolation, LatentInterpolation, SamplerKind, ScheduleKind};

/// A1111's latent-space factor (`opt_f`), which its size arithmetic uses.
const OPT_F: i64 = 8;

/// Model upscalers A1111 ships; this worker has none of their weights and resizes with Lanczos
/// instead (logged). Any other unknown name is A1111's 500.
const SUBSTITUTED_UPSCALERS: &[&str] =
    &["ESRGAN_4x", "LDSR", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "ScuNET", "ScuNET GAN", "ScuNET PSNR", "SwinIR 4x", "DAT x2", "DAT x3", "DAT x4"];

/// Forge's default `hr_cfg`.
const FORGE_HR_CFG_DEFAULT: f64 = 1.0;

/// A1111's hires geometry for a `width`×`height` first pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiresGeometry {
    /// `hr_upscale_to_x/y`: the size the first pass is upscaled to.
    pub upscale_to: (i64, i64),
    /// What A1111 returns: the upscaled latents (`upscale_to // 8`) less the truncation, × 8.
    pub output: (i64, i64),
    pub size_request: HiresSizeRequest,
}

/// `calculate_target_resolution`: `hr_resize_x/y` override `hr_scale`; one of them 0 keeps the
/// aspect ratio; both set means cover, then crop (`truncate_x/y` latent cells).
pub fn geometry(width: i64, height: i64, scale: f64, resize_x: i64, resize_y: i64) -> HiresGeometry {
    let (width, height) = (width.max(1), height.max(1));
    if resize_x == 0 && resize_y == 0 {
        let up = ((width as f64 * scale) as i64, (height as f64 * scale) as i64);
        return HiresGeometry { upscale_to: up, output: (up.0 / OPT_F * OPT_F, up.1 / OPT_F * OPT_F), size_request: HiresSizeRequest::Scale(scale) };
    }
    let size_request = HiresSizeRequest::Resize(resize_x.max(0) as u32, resize_y.max(0) as u32);
    let (up, target) = if resize_y == 0 {
        let up = (resize_x, resize_x * height / width);
        (up, up)
    } else if resize_x == 0 {
        let up = (resize_y * width / height, resize_y);
        (up, up)
    } else {
        let src_ratio = width as f64 / height as f64;
        let dst_ratio = resize_x as f64 / resize_y as f64;
        let up = if src_ratio < dst_ratio { (resize_x, resize_x * height / width) } else { (resize_y * width / height, resize_y) };
        (up, (resize_x, resize_y))
    };
    let truncate = ((up.0 - target.0).div_euclid(OPT_F), (up.1 - target.1).div_euclid(OPT_F));
    let output = ((up.0 / OPT_F - truncate.0) * OPT_F, (up.1 / OPT_F - truncate.1) * OPT_F);
    HiresGeometry { upscale_to: up, output, size_request }
}

/// The engine's upscaler for an A1111 name (`None` = unknown: A1111 answers 500).
fn upscaler(name: &str) -> Option<HiresUpscaler> {
    let latent = match name {
        "Latent" => Some(LatentInterpolation::Bilinear),
        "Latent (antialiased)" => Some(LatentInterpolation::BilinearAntialiased),
        "Latent (bicubic)" => Some(LatentInterpolation::Bicubic),
        "Latent (bicubic antialiased)" => Some(LatentInterpolation::BicubicAntialiased),
        "Latent (nearest)" => Some(LatentInterpolation::Nearest),
        "Latent (nearest-exact)" => Some(LatentInterpolation::NearestExact),
        _ => None,
    };
    if let Some(mode) = latent {
        debug_assert!(LATENT_UPSCALE_MODES.contains(&name));
        return Some(HiresUpscaler::Latent(mode));
    }
    match name {
        // A1111's "None" upscaler returns the image as is and `resize_image` then resizes it
        // with LANCZOS.
        "None" | "Lanczos" => Some(HiresUpscaler::Image(ImageInterpolation::Lanczos)),
        "Nearest" => Some(HiresUpscaler::Image(ImageInterpolation::Nearest)),
        other if SUBSTITUTED_UPSCALERS.contains(&other) => Some(HiresUpscaler::Image(ImageInterpolation::Lanczos)),
        _ => None,
    }
}

/// The upscaler name a request asks for (A1111's default is "Latent").
pub fn upscaler_name(req: &Txt2ImgRequest) -> &str {
    req.hr_upscaler.as_deref().unwrap_or("Latent")
}

/// A1111 checks the hires upscaler name before running (`could not find upscaler named X`).
pub fn check_hires(req: &Txt2ImgRequest) -> Result<(), A1111Error> {
    if req.enable_hr != Some(true) {
        return Ok(());
    }
    let name = upscaler_name(req);
    if upscaler(name).is_none() || !(LATENT_UPSCALE_MODES.contains(&name) || BUILTIN_UPSCALERS.contains(&name) || SUBSTITUTED_UPSCALERS.contains(&name)) {
        // A1111's body; its status (500) would tell clients to retry a request that cannot work.
        return Err(A1111Error::exception(StatusCode::BAD_REQUEST, "Exception", format!("could not find upscaler named {name}")));
    }
    if SUBSTITUTED_UPSCALERS.contains(&name) {
        tracing::warn!(upscaler = %name, "this worker has no {name} model; the hires pass resizes with Lanczos instead");
    }
    Ok(())
}

/// The engine's hires pass and the final size A1111 reports for it.
pub type PlannedHires = (HiresPass, (u32, u32));

/// The hires pass of a call and the size A1111 would return, or `None` without `enable_hr`.
/// `first_pass` is the requested size, `size_multiple` the model's: the engine works at the
/// nearest sizes it can make and the face resizes to A1111's size afterwards.
pub fn hires_pass(req: &Txt2ImgRequest, first_pass: (i64, i64), first_cfg: f64, size_multiple: u32) -> Result<Option<PlannedHires>, A1111Error> {
    if req.enable_hr != Some(true) {
        return Ok(None);
    }
    let scale = req.hr_scale.unwrap_or(2.0);
    let (resize_x, resize_y) = (req.hr_resize_x.unwrap_or(0), req.hr_resize_y.unwrap_or(0));
    if !scale.is_finite() || scale <= 0.0 || resize_x < 0 || resize_y < 0 {
        return Err(A1111Error::bad_request("hr_scale must be positive and hr_resize_x/y at least 0".to_string()));
    }
    let geometry = geometry(first_pass.0, first_pass.1, scale, resize_x, resize_y);
    let side = |v: i64| -> Result<u32, A1111Error> {
        u32::try_from(v).ok().filter(|v| (OPT_F as u32..=16_384).contains(v)).ok_or_else(|| A1111Error::bad_request(format!("the hires size {v} is out of range")))
    };
    let output = (side(geometry.output.0)?, side(geometry.output.1)?);
    let final_size = (nearest_multiple(output.0, size_multiple), nearest_multiple(output.1, size_multiple));
    let upscaled = (
        nearest_multiple(side(geometry.upscale_to.0)?, size_multiple).max(final_size.0),
        nearest_multiple(side(geometry.upscale_to.1)?, size_multiple).max(final_size.1),
    );
    let name = upscaler_name(req).to_string();
    let upscaler = upscaler(&name)
        .ok_or_else(|| A1111Error::exception(StatusCode::BAD_REQUEST, "Exception", format!("could not find upscaler named {name}")))?;
    // Unknown hires sampler/scheduler names fall back to the first pass's, as A1111's do.
    let sampler = req.hr_sampler_name.as_deref().filter(|n| !n.is_empty()).and_then(SamplerKind::from_name);
    let schedule = req.hr_scheduler.as_deref().filter(|n| !n.is_empty()).and_then(ScheduleKind::from_name);
    let schedule = match (sampler, schedule) {
        // A sampler given without a scheduler brings its own default schedule.
        (Some(kind), None) => Some(resolve(kind.a1111_name(), req.hr_scheduler.as_deref()).schedule),
        (_, schedule) => schedule,
    };
    let steps = req.hr_second_pass_steps.unwrap_or(0);
    if !(0..=10_000).contains(&steps) {
        return Err(A1111Error::bad_request(format!("hr_second_pass_steps must be between 0 and 10000, got {steps}")));
    }
    let pass = HiresPass {
        width: upscaled.0,
        height: upscaled.1,
        crop_to: (final_size != upscaled).then_some(final_size),
        steps: steps as u32,
        denoising_strength: req.common.denoising_strength(),
        upscaler,
        upscaler_name: name,
        size_request: geometry.size_request,
        sampler,
        schedule,
        prompt: req.hr_prompt.clone().filter(|p| !p.is_empty()),
        negative_prompt: req.hr_negative_prompt.clone().filter(|p| !p.is_empty()),
        // Forge's `hr_cfg` defaults to 1.0, which the request model fills in when it is absent;
        // upstream A1111 has no such field and reuses `cfg_scale`. So only a value other than
        // that default (and other than the first pass's) sets the hires CFG.
        cfg_scale: req.hr_cfg.filter(|c| *c != FORGE_HR_CFG_DEFAULT && *c != first_cfg),
    };
    Ok(Some((pass, output)))
}

/// The hires entries of `info.extra_generation_params`, in A1111's order (its callables, the
/// hires prompts, and the schedule type set later, are `null` there).
pub fn extra_params(extra: &mut OrderedObject, req: &Txt2ImgRequest, pass: &HiresPass) {
    extra.insert("Denoising strength", pass.denoising_strength);
    if let Some(name) = req.hr_sampler_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(name) != req.common.sampler_name.as_deref() {
            extra.insert("Hires sampler", name);
        }
    }
    extra.insert("Hires prompt", serde_json::Value::Null);
    extra.insert("Hires negative prompt", serde_json::Value::Null);
    extra.insert("Hires schedule type", serde_json::Value::Null);
    match pass.size_request {
        HiresSizeRequest::Scale(scale) => extra.insert("Hires upscale", scale),
        HiresSizeRequest::Resize(w, h) => extra.insert("Hires resize", format!("{w}x{h}")),
    }
    if pass.steps != 0 {
        extra.insert("Hires steps", i64::from(pass.steps));
    }
    extra.insert("Hires upscaler", pass.upscaler_name.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_target_sizes() {
        let g = geometry(512, 512, 2.0, 0, 0);
        assert_eq!((g.upscale_to, g.output, g.size_request), ((1024, 1024), (1024, 1024), HiresSizeRequest::Scale(2.0)));
        // int(w * scale), then latents of size // 8.
        assert_eq!(geometry(512, 768, 1.3, 0, 0).upscale_to, (665, 998));
        assert_eq!(geometry(512, 768, 1.3, 0, 0).output, (664, 992));
        // One side 0 keeps the aspect ratio.
        assert_eq!(geometry(512, 768, 2.0, 1024, 0).upscale_to, (1024, 1536));
        assert_eq!(geometry(512, 768, 2.0, 0, 1024).upscale_to, (682, 1024));
        // Both: cover, then crop. 512x768 to 1024x1024: upscale to 1024x1536, crop 64 cells.
        let g = geometry(512, 768, 2.0, 1024, 1024);
        assert_eq!((g.upscale_to, g.output, g.size_request), ((1024, 1536), (1024, 1024), HiresSizeRequest::Resize(1024, 1024)));
        let wide = geometry(768, 512, 2.0, 1000, 1000);
        assert_eq!((wide.upscale_to, wide.output), ((1500, 1000), (1000, 1000)));
    }

    #[test]
    fn upscaler_names() {
        assert_eq!(upscaler("Latent"), Some(HiresUpscaler::Latent(LatentInterpolation::Bilinear)));
        assert_eq!(upscaler("Latent (nearest-exact)"), Some(HiresUpscaler::Latent(LatentInterpolation::NearestExact)));
        assert_eq!(upscaler("None"), Some(HiresUpscaler::Image(ImageInterpolation::Lanczos)));
        assert_eq!(upscaler("R-ESRGAN 4x+"), Some(HiresUpscaler::Image(ImageInterpolation::Lanczos)));
        assert_eq!(upscaler("Nearest"), Some(HiresUpscaler::Image(ImageInterpolation::Nearest)));
        assert_eq!(upscaler("Bogus"), None);
    }
}

//! The hires second pass (A1111 `StableDiffusionProcessingTxt2Img.sample_hr_pass`): enlarge the
//! first pass's latents (in latent space, or decode → resize → encode), centre-crop them to the
//! final size, noise them with fresh noise from the image's own seeds at the new size, and run
//! img2img for exactly `steps` steps on a schedule of `int(steps / min(strength, 0.999))`.

use candle_core::Tensor;

use super::conditioning::TextConditioning;
use super::denoise::{loop_len, StepCallback};
use super::generate::{decode, image_noise, internal, invalid, run_denoise, Denoised, ImageSeeds};
use super::latent_upscale::upscale_latents;
use super::latents::{encode_image, PreparedLatents};
use super::model::SdModel;
use crate::backend::generation_engine::RunError;
use crate::backend::image_io::resize_rgb;
use crate::backend::request::{GenerationRequest, HiresPass, HiresUpscaler, ImageInterpolation, RgbImage};
use crate::backend::rng::BatchNoise;
use crate::backend::samplers::{build_sampler, Sampler};

/// Steps of the second pass as requested (0 = the first pass's).
pub fn hires_steps(req: &GenerationRequest, hires: &HiresPass) -> usize {
    if hires.steps == 0 { req.steps as usize } else { hires.steps as usize }
}

/// A sampler and the loop index it starts at.
pub type StartedSampler = (Box<dyn Sampler>, usize);

/// The second pass's sampler and the loop index it starts at; `None` when the strength is 0
/// (nothing is sampled).
pub fn hires_sampler(model: &SdModel, req: &GenerationRequest, hires: &HiresPass) -> Result<Option<StartedSampler>, RunError> {
    if hires.denoising_strength <= 0.0 {
        return Ok(None);
    }
    let steps = hires_steps(req, hires);
    // A1111 `setup_img2img_steps` with explicit steps: a longer schedule, of which the last
    // `steps` run.
    let schedule_len = ((steps as f64 / hires.denoising_strength.min(0.999)) as usize).max(steps);
    let sampler = build_sampler(hires.sampler.unwrap_or(req.sampler), hires.schedule.unwrap_or(req.schedule), &model.scheduler, schedule_len)
        .map_err(|e| invalid("hires.sampler", e.to_string()))?;
    let start = (schedule_len - steps) * sampler.order();
    Ok(Some((sampler, start)))
}

/// UNet evaluations of the second pass (for progress totals).
pub fn hires_loop_len(model: &SdModel, req: &GenerationRequest, hires: &HiresPass) -> Result<usize, RunError> {
    Ok(hires_sampler(model, req, hires)?.map(|(s, start)| loop_len(s.as_ref(), start)).unwrap_or(0))
}

/// Latent cells of the centre crop A1111 makes after upscaling: `(start, length)` along one axis
/// of `upscaled` cells when the pixel size goes from `upscaled_px` to `final_px`.
fn crop_span(upscaled: usize, upscaled_px: u32, final_px: u32, factor: u32) -> (usize, usize) {
    let truncate = (upscaled_px.saturating_sub(final_px) / factor) as usize;
    (truncate / 2, upscaled.saturating_sub(truncate))
}

/// The first pass's `latents` enlarged to the hires size and cropped to the final size.
fn upscaled_latents(model: &SdModel, req: &GenerationRequest, hires: &HiresPass, latents: &Tensor, seeds: ImageSeeds) -> Result<Tensor, RunError> {
    let f = model.vae_scale_factor();
    let (up_h, up_w) = ((hires.height / f) as usize, (hires.width / f) as usize);
    let upscaled = match hires.upscaler {
        HiresUpscaler::Latent(mode) => upscale_latents(latents, up_h, up_w, mode).map_err(internal)?,
        HiresUpscaler::Image(filter) => {
            let image = decode(model, latents).map_err(internal)?;
            let resized = resize_pixels(&image, up_w as u32 * f, up_h as u32 * f, filter)?;
            // A1111 samples the posterior from torch's global generator; a generator of its own
            // (the image's seed) keeps the hires noise on the image's generator as in A1111.
            let mut posterior = BatchNoise::new(req.rng, &[seeds.seed]);
            encode_image(model, &resized, &mut posterior).map_err(internal)?
        }
    };
    let (final_w, final_h) = hires.output_size();
    let (y, rows) = crop_span(up_h, hires.height, final_h, f);
    let (x, cols) = crop_span(up_w, hires.width, final_w, f);
    upscaled.narrow(2, y, rows).and_then(|t| t.narrow(3, x, cols)).map_err(internal)
}

fn resize_pixels(image: &RgbImage, width: u32, height: u32, filter: ImageInterpolation) -> Result<RgbImage, RunError> {
    match filter {
        ImageInterpolation::Lanczos => resize_rgb(image, width, height).map_err(|e| internal(e.to_string())),
        ImageInterpolation::Nearest => Ok(resize_nearest(image, width, height)),
    }
}

/// Pillow's NEAREST: each output pixel takes the input pixel under its centre.
fn resize_nearest(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sx, sy) = (image.width as f64 / width as f64, image.height as f64 / height as f64);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        let src_y = (((y as f64 + 0.5) * sy) as u32).min(image.height - 1);
        for x in 0..width {
            let src_x = (((x as f64 + 0.5) * sx) as u32).min(image.width - 1);
            let at = ((src_y * image.width + src_x) * 3) as usize;
            pixels.extend_from_slice(&image.pixels[at..at + 3]);
        }
    }
    RgbImage { width, height, pixels }
}

/// The second pass for one image, from its first-pass `latents` to its final latents.
pub fn hires_latents(
    model: &SdModel,
    req: &GenerationRequest,
    hires: &HiresPass,
    latents: &Tensor,
    cond: &TextConditioning,
    seeds: ImageSeeds,
    on_step: &mut StepCallback<'_>,
) -> Result<Denoised, RunError> {
    let upscaled = upscaled_latents(model, req, hires, latents, seeds)?;
    let Some((mut sampler, start_index)) = hires_sampler(model, req, hires)? else {
        return Ok(Denoised { latents: upscaled, stopped_early: false });
    };
    // A1111 rebuilds the per-image generators with the same seeds at the new shape.
    let mut noise = image_noise(model, req, seeds);
    let eps = noise.initial_randn(upscaled.dims(), &model.device, model.dtype).map_err(internal)?;
    let noised = sampler.add_noise(&upscaled, &eps, start_index).map_err(internal)?;
    let prepared = PreparedLatents { latents: noised, start_index, inpaint: None };
    run_denoise(model, cond, hires.cfg_scale.unwrap_or(req.cfg_scale), sampler.as_mut(), prepared, &mut noise, on_step)
}

/// Check a hires pass against the request and the model.
pub fn validate_hires(req: &GenerationRequest, hires: &HiresPass, model: &SdModel) -> Result<(), RunError> {
    if req.init_image.is_some() {
        return Err(invalid("hires", "a hires pass follows a txt2img first pass; it cannot be combined with an init image".into()));
    }
    let f = model.vae_scale_factor();
    let multiple = model.size_multiple();
    for (field, value) in [("hires.width", hires.width), ("hires.height", hires.height)] {
        if value == 0 || value % f != 0 {
            return Err(invalid(field, format!("{value} is not a positive multiple of {f}")));
        }
    }
    let (w, h) = hires.output_size();
    for (field, value, upscaled) in [("hires.crop_width", w, hires.width), ("hires.crop_height", h, hires.height)] {
        if value == 0 || value % multiple != 0 || value > upscaled {
            return Err(invalid(field, format!("{value} must be a positive multiple of {multiple}, at most the upscaled {upscaled}")));
        }
    }
    if !(hires.denoising_strength.is_finite() && (0.0..=1.0).contains(&hires.denoising_strength)) {
        return Err(invalid("hires.denoising_strength", "must be between 0 and 1".into()));
    }
    if let Some(cfg) = hires.cfg_scale.filter(|c| !c.is_finite() || *c < 0.0) {
        return Err(invalid("hires.cfg_scale", format!("{cfg} is not a finite number ≥ 0")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_follows_a1111s_truncation() {
        // 64x48 first pass, hr_resize 128x128: upscale to 171x128 (cover), truncate (171-128)//8 = 5
        // cells of 21 → start 2, 16 cells.
        assert_eq!(crop_span(21, 171, 128, 8), (2, 16));
        assert_eq!(crop_span(16, 128, 128, 8), (0, 16));
    }

    #[test]
    fn nearest_resize_takes_the_pixel_under_each_centre() {
        let image = RgbImage { width: 2, height: 1, pixels: vec![1, 1, 1, 2, 2, 2] };
        let out = resize_nearest(&image, 4, 2);
        assert_eq!(out.pixels.chunks(3).map(|p| p[0]).collect::<Vec<_>>(), vec![1, 1, 2, 2, 1, 1, 2, 2]);
    }
}

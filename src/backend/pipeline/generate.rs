//! One image through the pipeline, as plain functions the runner and the golden tests share:
//! validate the request against the model, prepare inputs, denoise to final latents, decode.

use candle_core::Tensor;

use super::conditioning::TextConditioning;
use super::denoise::{denoise, DenoiseError, StepCallback};
use super::hires::validate_hires;
use super::image_tensor::tensor_to_rgb;
use super::latents::{self, img2img_start_index, PreparedLatents};
use super::model::{Family, SdModel};
use crate::backend::generation_engine::RunError;
pub use super::inputs::{prepare_inputs, PasteBack, PreparedInputs};
use crate::backend::request::{GenerationRequest, JobError, RgbImage};
use crate::backend::rng::{BatchNoise, ImageVariation};
use crate::backend::samplers::{build_sampler, Sampler};

pub fn prepare_latents(
    model: &SdModel,
    req: &GenerationRequest,
    inputs: &PreparedInputs,
    steps: usize,
    sampler: &dyn Sampler,
    noise: &mut BatchNoise,
) -> candle_core::Result<PreparedLatents> {
    let strength = req.init_image.as_ref().map(|i| i.strength).unwrap_or(1.0);
    match (&inputs.init, &inputs.mask) {
        (Some(image), Some(mask)) => latents::inpaint(model, image, mask, inputs.content, strength, steps, sampler, noise),
        (Some(image), None) => latents::img2img(model, image, strength, steps, sampler, noise),
        _ => latents::txt2img(model, req.width, req.height, sampler, noise),
    }
}

pub fn start_index(req: &GenerationRequest, sampler: &dyn Sampler) -> usize {
    match &req.init_image {
        Some(init) if !(req.mask.is_some() && init.strength >= 1.0) => img2img_start_index(req.steps as usize, init.strength, sampler.order()),
        _ => 0,
    }
}

pub fn new_sampler(req: &GenerationRequest, model: &SdModel) -> Result<Box<dyn Sampler>, RunError> {
    build_sampler(req.sampler, req.schedule, &model.scheduler, req.steps as usize).map_err(|e| invalid("sampler", e.to_string()))
}

pub fn decode(model: &SdModel, latents: &Tensor) -> candle_core::Result<RgbImage> {
    let cfg = model.vae.config();
    let unscaled = (latents / cfg.scaling_factor())?;
    let unscaled = match cfg.shift_factor() {
        Some(shift) => (unscaled + shift)?,
        None => unscaled,
    };
    tensor_to_rgb(&model.vae.decode(&unscaled)?)
}

/// Largest `seed_resize_from` side: the from-size noise is drawn in full, so it is bounded.
const MAX_RESIZE_FROM: u32 = 8192;

/// Check the request against the model that will run it (chosen by the runner beforehand).
pub fn validate(req: &GenerationRequest, model: &SdModel) -> Result<(), RunError> {
    let multiple = model.size_multiple();
    for (field, value) in [("width", req.width), ("height", req.height)] {
        if value == 0 || value % multiple != 0 {
            return Err(invalid(field, format!("{value} is not a positive multiple of {multiple}, which this model needs")));
        }
    }
    if req.steps == 0 {
        return Err(invalid("steps", "must be at least 1".into()));
    }
    if req.num_images == 0 {
        return Err(invalid("num_images", "must be at least 1".into()));
    }
    if !req.cfg_scale.is_finite() || req.cfg_scale < 0.0 {
        return Err(invalid("cfg_scale", "must be a finite number ≥ 0".into()));
    }
    if let Some(init) = &req.init_image {
        if !(init.strength.is_finite() && (0.0..=1.0).contains(&init.strength)) {
            return Err(invalid("strength", "must be between 0 and 1".into()));
        }
    }
    if let Some(variation) = &req.variation {
        // A1111 accepts any strength (beyond 0..1 the slerp extrapolates); only NaN/∞ are nonsense.
        if !variation.strength.is_finite() {
            return Err(invalid("subseed_strength", "must be a finite number".into()));
        }
        if let Some((w, h)) = variation.resize_from {
            if w == 0 || h == 0 || w > MAX_RESIZE_FROM || h > MAX_RESIZE_FROM {
                return Err(invalid("seed_resize_from", format!("width and height must be between 1 and {MAX_RESIZE_FROM}")));
            }
        }
    }
    if let Some(hires) = &req.hires {
        validate_hires(req, hires, model)?;
    }
    if req.mask.is_some() && req.init_image.is_none() {
        return Err(invalid("mask", "a mask needs an init image to inpaint".into()));
    }
    let layers = model.text_encoder.config().num_hidden_layers as u32;
    // SDXL reads a fixed layer unless A1111's `sdxl_clip_l_skip` lets clip skip move CLIP-L's.
    let skips = model.family == Family::Sd || req.sdxl_clip_l_skip;
    if skips && req.clip_skip > layers {
        return Err(invalid("clip_skip", format!("must be at most {layers} for this text encoder")));
    }
    Ok(())
}

pub fn invalid(field: &str, message: String) -> RunError {
    RunError::Failed(JobError::InvalidRequest { field: field.to_string(), message })
}

pub fn internal(e: impl std::fmt::Display) -> RunError {
    RunError::Failed(JobError::Internal(e.to_string()))
}

/// The seeds of one image: its generator's seed and, with a variation, its subseed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSeeds {
    pub seed: u64,
    pub subseed: Option<u64>,
}

impl ImageSeeds {
    /// An image without a variation seed.
    pub fn plain(seed: u64) -> Self {
        ImageSeeds { seed, subseed: None }
    }

    /// Image `index` of `req` when the job's base seed is `seed`.
    pub fn of_image(req: &GenerationRequest, seed: u64, index: u32) -> Self {
        let (seed, subseed) = req.image_seeds(seed, index);
        ImageSeeds { seed, subseed }
    }
}

/// One image's generator, its initial noise varied as the request's variation seed says.
pub fn image_noise(model: &SdModel, req: &GenerationRequest, seeds: ImageSeeds) -> BatchNoise {
    let noise = BatchNoise::new(req.rng, &[seeds.seed]);
    let Some(variation) = req.variation else {
        return noise;
    };
    let f = model.vae_scale_factor();
    let resize_from = variation.resize_from.map(|(w, h)| ((h / f) as usize, (w / f) as usize));
    let image = ImageVariation {
        kind: req.rng,
        seed: seeds.seed,
        subseed: seeds.subseed.unwrap_or(variation.subseed),
        strength: variation.strength,
        resize_from,
    };
    noise.with_variations(vec![Some(image)])
}

/// How a denoising loop ended: all steps done, or stopped early by the step callback (cancel or
/// interrupt; the caller knows which) with the latents reached so far.
pub struct Denoised {
    pub latents: Tensor,
    pub stopped_early: bool,
}

/// [`denoise`] with its errors as the engine's.
pub fn run_denoise(
    model: &SdModel,
    cond: &TextConditioning,
    guidance_scale: f64,
    sampler: &mut dyn Sampler,
    prepared: PreparedLatents,
    noise: &mut BatchNoise,
    on_step: &mut StepCallback<'_>,
) -> Result<Denoised, RunError> {
    match denoise(model, cond, guidance_scale, sampler, prepared, noise, on_step) {
        Ok(latents) => Ok(Denoised { latents, stopped_early: false }),
        Err(DenoiseError::Stopped(latents)) => Ok(Denoised { latents, stopped_early: true }),
        Err(DenoiseError::Tensor(e)) => Err(internal(e)),
    }
}

/// Denoise one image (its own generator seeded with `seeds.seed`) as far as the step callback
/// lets it.
pub fn first_pass_latents(
    model: &SdModel,
    req: &GenerationRequest,
    inputs: &PreparedInputs,
    cond: &TextConditioning,
    seeds: ImageSeeds,
    on_step: &mut StepCallback<'_>,
) -> Result<Denoised, RunError> {
    let mut noise = image_noise(model, req, seeds);
    let mut sampler = new_sampler(req, model)?;
    let prepared = prepare_latents(model, req, inputs, req.steps as usize, sampler.as_ref(), &mut noise).map_err(internal)?;
    run_denoise(model, cond, req.cfg_scale, sampler.as_mut(), prepared, &mut noise, on_step)
}

/// Denoise one image to its final latents (first pass only); stopping early is a cancel.
pub fn generate_latents(
    model: &SdModel,
    req: &GenerationRequest,
    inputs: &PreparedInputs,
    cond: &TextConditioning,
    seeds: ImageSeeds,
    on_step: &mut StepCallback<'_>,
) -> Result<Tensor, RunError> {
    let denoised = first_pass_latents(model, req, inputs, cond, seeds, on_step)?;
    if denoised.stopped_early {
        return Err(RunError::Cancelled);
    }
    Ok(denoised.latents)
}

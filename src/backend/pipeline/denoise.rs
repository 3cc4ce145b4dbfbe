//! The one denoising loop every mode shares: (CFG batch) → scale → UNet → guidance → sampler step,
//! with inpainting's extra channels or known-region blending, reporting each step.

use candle_core::{Result, Tensor};

use super::conditioning::TextConditioning;
use super::latents::{InpaintMode, PreparedLatents};
use super::model::SdModel;
use crate::backend::rng::BatchNoise;
use crate::backend::samplers::Sampler;

/// Why the loop stopped early.
#[derive(Debug)]
pub enum DenoiseError {
    /// The step callback asked to stop (cancel or interrupt), leaving these latents.
    Stopped(Tensor),
    Tensor(candle_core::Error),
}

impl From<candle_core::Error> for DenoiseError {
    fn from(e: candle_core::Error) -> Self {
        DenoiseError::Tensor(e)
    }
}

/// Called after every loop iteration with (iterations done, iterations in total, latents).
/// Returning `false` stops the loop (cancellation).
pub type StepCallback<'a> = dyn FnMut(usize, usize, &Tensor) -> bool + 'a;

/// Number of UNet evaluations the loop will make from `start_index`.
pub fn loop_len(sampler: &dyn Sampler, start_index: usize) -> usize {
    sampler.timesteps().len().saturating_sub(start_index)
}

pub fn denoise(
    model: &SdModel,
    cond: &TextConditioning,
    guidance_scale: f64,
    sampler: &mut dyn Sampler,
    prepared: PreparedLatents,
    noise: &mut BatchNoise,
    on_step: &mut StepCallback<'_>,
) -> std::result::Result<Tensor, DenoiseError> {
    let PreparedLatents { mut latents, start_index, inpaint } = prepared;
    let timesteps: Vec<f64> = sampler.timesteps().to_vec();
    let total = timesteps.len().saturating_sub(start_index);
    let batch = if cond.guided { 2 } else { 1 };
    // The extra UNet channels of an inpainting model are the same every step: build them once.
    let extra_channels = match &inpaint {
        Some(InpaintMode::Channels { mask, masked_image_latents }) => {
            Some(Tensor::cat(&[mask, masked_image_latents], 1)?.repeat((batch, 1, 1, 1))?)
        }
        _ => None,
    };
    for (done, index) in (start_index..timesteps.len()).enumerate() {
        let t = timesteps[index];
        let doubled = if cond.guided { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
        let mut unet_in = sampler.scale_model_input(&doubled, index)?;
        if let Some(extra) = &extra_channels {
            unet_in = Tensor::cat(&[&unet_in, extra], 1)?;
        }
        // Prompt editing counts denoiser calls from the start of this loop, as A1111 does.
        let text = cond.at_step(done);
        let out = model.unet.forward(&unet_in, t, &text.context, text.sdxl.as_ref())?;
        let guided = if cond.guided { apply_guidance(&out, guidance_scale)? } else { out };
        latents = sampler.step(&guided, index, &latents, noise)?;
        if let Some(InpaintMode::Blend { mask, image_latents, noise: first_noise }) = &inpaint {
            latents = blend_known_region(sampler, &latents, mask, image_latents, first_noise, index, timesteps.len())?;
        }
        if !on_step(done + 1, total, &latents) {
            return Err(DenoiseError::Stopped(latents));
        }
    }
    Ok(latents)
}

/// `uncond + scale * (cond - uncond)` over the `[uncond, cond]` batch, in diffusers' order.
fn apply_guidance(out: &Tensor, scale: f64) -> Result<Tensor> {
    let uncond = out.narrow(0, 0, 1)?;
    let cond = out.narrow(0, 1, 1)?;
    uncond.add(&((cond - &uncond)? * scale)?)
}

/// Put the known (unmasked) region back, noised to the level of the next step.
fn blend_known_region(
    sampler: &dyn Sampler,
    latents: &Tensor,
    mask: &Tensor,
    image_latents: &Tensor,
    noise: &Tensor,
    index: usize,
    len: usize,
) -> Result<Tensor> {
    let known = if index + 1 < len { sampler.add_noise(image_latents, noise, index + 1)? } else { image_latents.clone() };
    let keep = mask.ones_like()?.sub(mask)?;
    known.broadcast_mul(&keep)?.add(&latents.broadcast_mul(mask)?)
}

//! Initial latents for txt2img, img2img and inpainting, drawing noise from the per-image generator
//! in exactly the order diffusers' pipelines draw it (so seeds reproduce diffusers' images).

use candle_core::{Result, Tensor};

use super::image_tensor::{downsample_nearest, mask_to_tensor, rgb_to_tensor};
use super::model::SdModel;
use crate::backend::image_io::resize_mask_bicubic;
use crate::backend::request::{MaskImage, MaskedContent, RgbImage};
use crate::backend::rng::BatchNoise;
use crate::backend::samplers::Sampler;

/// How the latents relate to an inpainting mask during denoising.
pub enum InpaintMode {
    /// A 9-channel UNet: mask and masked-image latents are extra UNet input channels.
    Channels { mask: Tensor, masked_image_latents: Tensor },
    /// An ordinary 4-channel UNet: after each step the known region is put back, noised to the
    /// next step's level (diffusers' `StableDiffusionInpaintPipeline` with a 4-channel UNet).
    Blend { mask: Tensor, image_latents: Tensor, noise: Tensor },
}

/// Where the denoising loop starts and what it starts from.
pub struct PreparedLatents {
    pub latents: Tensor,
    /// First loop index into `sampler.timesteps()`.
    pub start_index: usize,
    pub inpaint: Option<InpaintMode>,
}

/// Scaled latents of an image: `scaling * (posterior sample - shift)`, drawing the posterior
/// noise from `noise` (one draw).
pub fn encode_image(model: &SdModel, image: &RgbImage, noise: &mut BatchNoise) -> Result<Tensor> {
    encode_pixels(model, &rgb_to_tensor(image, &model.device, model.dtype)?, noise)
}

fn latent_dims(model: &SdModel, width: u32, height: u32) -> [usize; 4] {
    let f = model.vae_scale_factor();
    [1, 4, (height / f) as usize, (width / f) as usize]
}

/// First loop index for img2img at `strength`, as diffusers' `get_timesteps`: the last
/// `int(steps * strength)` steps run (at least one, where diffusers would refuse to run none).
pub fn img2img_start_index(steps: usize, strength: f64, order: usize) -> usize {
    let init = ((steps as f64 * strength) as usize).clamp(1, steps.max(1));
    steps.saturating_sub(init) * order
}

/// txt2img: noise × the sampler's initial sigma.
pub fn txt2img(model: &SdModel, width: u32, height: u32, sampler: &dyn Sampler, noise: &mut BatchNoise) -> Result<PreparedLatents> {
    let eps = noise.initial_randn(&latent_dims(model, width, height), &model.device, model.dtype)?;
    let latents = (eps * sampler.init_noise_sigma())?;
    Ok(PreparedLatents { latents, start_index: 0, inpaint: None })
}

/// img2img: posterior sample first, then the noise that `add_noise` mixes in at the start step.
pub fn img2img(model: &SdModel, image: &RgbImage, strength: f64, steps: usize, sampler: &dyn Sampler, noise: &mut BatchNoise) -> Result<PreparedLatents> {
    let image_latents = encode_image(model, image, noise)?;
    let start_index = img2img_start_index(steps, strength, sampler.order());
    let eps = noise.initial_randn(image_latents.dims(), &model.device, model.dtype)?;
    let latents = sampler.add_noise(&image_latents, &eps, start_index)?;
    Ok(PreparedLatents { latents, start_index, inpaint: None })
}

/// Inpainting (mask white = repaint), for 9-channel inpainting UNets and ordinary ones.
///
/// With `Original` content this is diffusers' pipeline (at strength 1 the latents start as pure
/// noise). The other contents follow A1111, which always starts from the init latents plus
/// noise, so what the masked area holds matters even at strength 1: the "fill" image was
/// already prepared, "latent noise" puts the image's initial noise under the mask and "latent
/// nothing" zeros (A1111's `init_latent * mask + noise * nmask`).
#[allow(clippy::too_many_arguments)]
pub fn inpaint(
    model: &SdModel,
    image: &RgbImage,
    mask: &MaskImage,
    content: MaskedContent,
    strength: f64,
    steps: usize,
    sampler: &dyn Sampler,
    noise: &mut BatchNoise,
) -> Result<PreparedLatents> {
    let dims = latent_dims(model, image.width, image.height);
    let full_strength = strength >= 1.0;
    let start_index = if full_strength { 0 } else { img2img_start_index(steps, strength, sampler.order()) };
    let from_image = content != MaskedContent::Original || !full_strength;
    // diffusers encodes the unmasked image first whenever it needs it: for a 4-channel UNet
    // (blending) or to start part-way (strength < 1).
    let image_latents = if !model.is_inpainting_model() || from_image { Some(encode_image(model, image, noise)?) } else { None };
    let eps = noise.initial_randn(&dims, &model.device, model.dtype)?;
    let image_latents = match (image_latents, content) {
        (Some(latents), MaskedContent::LatentNoise) => Some(replace_masked(&latents, mask, Some(&eps), dims)?),
        (Some(latents), MaskedContent::LatentNothing) => Some(replace_masked(&latents, mask, None, dims)?),
        (latents, _) => latents,
    };
    let latents = match (&image_latents, from_image) {
        (Some(img), true) => sampler.add_noise(img, &eps, start_index)?,
        _ => (&eps * sampler.init_noise_sigma())?,
    };
    let mask_full = mask_to_tensor(mask, &model.device, model.dtype)?;
    let mask_latent = downsample_nearest(&mask_full, dims[2], dims[3])?;
    let inpaint_mode = if model.is_inpainting_model() {
        let keep = mask_full.lt(0.5)?.to_dtype(model.dtype)?;
        let pixels = rgb_to_tensor(image, &model.device, model.dtype)?;
        let masked_image_latents = encode_pixels(model, &pixels.broadcast_mul(&keep)?, noise)?;
        InpaintMode::Channels { mask: mask_latent, masked_image_latents }
    } else {
        // diffusers also encodes the masked image here (one posterior draw) even though a
        // 4-channel UNet never uses it; draw the same amount so the stream stays aligned.
        let _ = noise.randn(&dims, &model.device, model.dtype)?;
        let image_latents = image_latents.unwrap_or(latents.clone());
        InpaintMode::Blend { mask: mask_latent, image_latents, noise: eps }
    };
    Ok(PreparedLatents { latents, start_index, inpaint: Some(inpaint_mode) })
}

/// `latents` with the masked area replaced by `replacement` (zeros when `None`). The mask is
/// brought to the latent size as A1111 does (Pillow's bicubic resize, then rounded), not with
/// the nearest-neighbour rule diffusers uses for its blending mask.
fn replace_masked(latents: &Tensor, mask: &MaskImage, replacement: Option<&Tensor>, dims: [usize; 4]) -> Result<Tensor> {
    let small = resize_mask_bicubic(mask, dims[3] as u32, dims[2] as u32).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let values: Vec<f32> = small.pixels.iter().map(|&v| if v >= 128 { 1.0 } else { 0.0 }).collect();
    let repaint = Tensor::from_vec(values, (1, 1, dims[2], dims[3]), latents.device())?.to_dtype(latents.dtype())?;
    let kept = latents.broadcast_mul(&(1.0 - &repaint)?)?;
    match replacement {
        Some(new) => kept + new.broadcast_mul(&repaint)?,
        None => Ok(kept),
    }
}

/// [`encode_image`] for pixels already in tensor form (`[1, 3, H, W]`, -1..1).
fn encode_pixels(model: &SdModel, pixels: &Tensor, noise: &mut BatchNoise) -> Result<Tensor> {
    let posterior = model.vae.encode(pixels)?;
    let eps = noise.randn(posterior.mean.dims(), &model.device, model.dtype)?;
    let sample = posterior.sample(&eps)?;
    let cfg = model.vae.config();
    let shifted = match cfg.shift_factor() {
        Some(shift) => (sample - shift)?,
        None => sample,
    };
    shifted * cfg.scaling_factor()
}

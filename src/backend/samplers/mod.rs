//! Samplers (diffusers scheduler classes under A1111 names) behind one small trait.
//!
//! A sampler is built per job from the model's own `scheduler_config.json` the way diffusers'
//! `SamplerClass.from_config(config)` does: keys present in the file override the class's
//! defaults, absent keys take that class's own default. The schedule (`Karras`, ...) sets the
//! class's sigma options.

use candle_core::{Result, Tensor};

use crate::backend::rng::NoiseSource;

/// One denoising schedule in progress. The pipeline drives it as diffusers' pipelines do:
///
/// ```text
/// for (i, t) in sampler.timesteps()[start..].iter().enumerate() (i absolute: start + k) {
///     x_in = sampler.scale_model_input(&latents, i)
///     eps  = unet(x_in, t) (+ CFG)
///     latents = sampler.step(&eps, i, &latents, noise)
/// }
/// ```
///
/// img2img starts at `start = t_start * order()` after `add_noise(image_latents, noise, start)`.
pub trait Sampler: Send {
    /// The timestep value fed to the UNet for each model evaluation, in loop order (fractional
    /// for Euler-type samplers; Heun repeats entries, so this has one entry per UNet call).
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of the initial noise (txt2img latents = randn * this).
    fn init_noise_sigma(&self) -> f64;

    /// Scale the UNet input at loop index `index` (identity for DDIM-type samplers).
    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor>;

    /// One update at loop index `index`, from the (guided) model output. Stochastic samplers
    /// draw their noise from `noise`, in the order diffusers draws it.
    fn step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor>;

    /// Noise clean latents to the level of loop index `index` (img2img start).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor>;

    /// 2 for Heun (two model calls per step), else 1.
    fn order(&self) -> usize {
        1
    }
}

//! What the k-diffusion-style samplers (Euler, Euler a, Heun, LMS) share: a ladder of sigmas
//! walked by loop index, the UNet input scaled by `1 / sqrt(σ² + 1)`, img2img latents noised as
//! `x + σ·noise`, and the initial noise scaled by the largest sigma. Each sampler keeps only its
//! update rule ([`LadderSampler::ladder_step`]); the rest of [`Sampler`] comes from the ladder.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::{self, DiscreteSigmaOptions, DiscreteSigmas, KarrasBounds};
use super::error::SamplerError;
use super::scheduler_config::{FinalSigmasType, InterpolationType, SchedulerConfig, TimestepSpacing};
use super::tensor_ops::{div, mul};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule};
use super::{sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

/// The per-class choices of how the discrete sigmas are built.
#[derive(Debug, Clone, Copy)]
pub struct LadderOptions {
    pub karras_bounds: KarrasBounds,
    pub interpolation: InterpolationType,
    pub final_sigma: FinalSigmasType,
}

/// A class's `set_timesteps(steps)`: its training schedule, the step-count check, then the
/// discrete timesteps and sigmas. Also returns the timestep spacing (it decides the initial
/// noise sigma).
pub fn class_schedule(
    config: &SchedulerConfig,
    defaults: &ClassDefaults,
    steps: usize,
    choices: LadderOptions,
) -> std::result::Result<(DiscreteSigmas, TimestepSpacing), SamplerError> {
    let training = TrainingSchedule::from_config(config, defaults)?;
    training_schedule::check_steps(steps, &training)?;
    let spacing = training_schedule::spacing(config, defaults);
    let options = DiscreteSigmaOptions {
        spacing,
        steps_offset: training_schedule::steps_offset(config),
        sigma_spacing: discrete_sigmas::sigma_spacing_from_config(config, defaults.sampler)?,
        karras_bounds: choices.karras_bounds,
        interpolation: choices.interpolation,
        final_sigma: choices.final_sigma,
    };
    Ok((discrete_sigmas::discrete_sigmas(&training, config, steps, &options), spacing))
}

/// The loop's timesteps and sigmas (f32 as diffusers computes them; f64 copies for callers).
pub struct SigmaLadder {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    init_noise_sigma: f64,
}

impl SigmaLadder {
    pub fn new(timesteps: Vec<f64>, sigmas: Vec<f32>, spacing: TimestepSpacing) -> Self {
        SigmaLadder {
            timesteps,
            init_noise_sigma: discrete_sigmas::init_noise_sigma(&sigmas, spacing),
            sigmas_f64: sigmas.iter().map(|&s| f64::from(s)).collect(),
            sigmas,
        }
    }

    /// The sigma at loop index `index` (an error past the end of the ladder).
    pub fn sigma(&self, index: usize) -> Result<f32> {
        sample_sigma(&self.sigmas, index)
    }
}

/// A sampler built on a [`SigmaLadder`]; implementing this implements [`Sampler`].
pub trait LadderSampler: Send {
    fn ladder(&self) -> &SigmaLadder;

    /// The sampler's update at loop index `index` (see [`Sampler::step`]).
    fn ladder_step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor>;

    /// Model calls per step (2 for Heun).
    fn calls_per_step(&self) -> usize {
        1
    }
}

impl<T: LadderSampler> Sampler for T {
    fn timesteps(&self) -> &[f64] {
        &self.ladder().timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.ladder().sigmas_f64)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.ladder().init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor> {
        let sigma = self.ladder().sigma(index)?;
        div(sample, (sigma * sigma + 1.0).sqrt())
    }

    fn step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        self.ladder_step(model_output, index, sample, noise)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        original + mul(noise, self.ladder().sigma(index)?)?
    }

    fn order(&self) -> usize {
        self.calls_per_step()
    }
}

//! "DDPM": diffusers' `DDPMScheduler` (ancestral sampling of Ho et al. 2020). Fresh noise is
//! drawn at every step whose timestep is above 0; a step at timestep 0 draws nothing.

use candle_core::{Result, Tensor};

use super::error::SamplerError;
use super::prediction::x0_from_alpha;
use super::scheduler_config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules;
use super::tensor_ops::{draw_noise, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr};
use super::x0_clipping::X0Clipping;
use super::{loop_timestep, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "DDPMScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: &[
        BetaSchedule::Linear,
        BetaSchedule::ScaledLinear,
        BetaSchedule::SquaredcosCapV2,
        BetaSchedule::Laplace,
        BetaSchedule::Sigmoid,
    ],
    zero_snr: ZeroSnr::Rescale,
    timestep_spacing: TimestepSpacing::Leading,
};

/// The supported `variance_type`s, "fixed_small", "fixed_small_log" and "fixed_large" (the
/// learned ones need a UNet that predicts its variance; "fixed_large_log" makes diffusers take
/// the square root of a log, i.e. NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoiseVariance {
    Small,
    SmallLog,
    Large,
}

pub struct Ddpm {
    training: TrainingSchedule,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    clipping: X0Clipping,
    variance_type: NoiseVariance,
}

impl Ddpm {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let variance_type = match config.variance_type.as_deref().unwrap_or("fixed_small") {
            "fixed_small" => NoiseVariance::Small,
            "fixed_small_log" => NoiseVariance::SmallLog,
            "fixed_large" => NoiseVariance::Large,
            other => return Err(SamplerError::unsupported(DEFAULTS.sampler, format!("variance_type {other:?}"))),
        };
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let timesteps = sigma_schedules::integer_timesteps(
            training_schedule::spacing(config, &DEFAULTS),
            training.num_train_timesteps,
            steps,
            training_schedule::steps_offset(config),
        );
        Ok(Ddpm {
            training,
            timesteps,
            prediction: training_schedule::prediction_type(config),
            clipping: X0Clipping::from_config(config, true),
            variance_type,
        })
    }

    /// `alphas_cumprod` at the loop entry after `index` (1 past the end).
    fn alpha_prod_prev(&self, index: usize) -> Result<f32> {
        match self.timesteps.get(index + 1) {
            Some(&prev_t) if prev_t >= 0.0 => self.training.alpha_cumprod_at(prev_t),
            _ => Ok(1.0),
        }
    }

    /// The standard deviation of the added noise (`_get_variance`, then the step's square root
    /// for the non-log types).
    fn noise_std(&self, alpha_prod_t: f32, alpha_prod_t_prev: f32) -> f32 {
        let current_beta_t = 1.0 - alpha_prod_t / alpha_prod_t_prev;
        let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
        match self.variance_type {
            NoiseVariance::Small => variance.sqrt(),
            NoiseVariance::SmallLog => (0.5 * variance.ln()).exp(),
            NoiseVariance::Large => current_beta_t.sqrt(),
        }
    }
}

impl Sampler for Ddpm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let t = loop_timestep(&self.timesteps, index)?;
        let alpha_prod_t = self.training.alpha_cumprod_at(t)?;
        let alpha_prod_t_prev = self.alpha_prod_prev(index)?;
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let x0 = self.clipping.apply(&x0_from_alpha(self.prediction, &model_output, &x, alpha_prod_t)?)?;
        let x0_coeff = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev = (mul(&x0, x0_coeff)? + mul(&x, sample_coeff)?)?;
        if t > 0.0 {
            let fresh = draw_noise(noise, &model_output)?;
            prev = (prev + mul(&fresh, self.noise_std(alpha_prod_t, alpha_prod_t_prev))?)?;
        }
        prev.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let t = loop_timestep(&self.timesteps, index)?;
        let alpha_prod = self.training.alpha_cumprod_at(t)?;
        mul(original, alpha_prod.sqrt())? + mul(noise, (1.0 - alpha_prod).sqrt())?
    }
}

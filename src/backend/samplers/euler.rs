//! "Euler": diffusers' `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2 with
//! `s_churn = 0`, so it never draws noise).

use candle_core::{Result, Tensor};

use super::discrete_sigmas::{self, DiscreteSigmaOptions, KarrasBounds};
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing, TimestepType,
};
use super::tensor_ops::{div, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::{sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "EulerDiscreteScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::RescaleKeepSigmaFinite,
    timestep_spacing: TimestepSpacing::Linspace,
};

pub struct Euler {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl Euler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let spacing = training_schedule::spacing(config, &DEFAULTS);
        let prediction = training_schedule::prediction_type(config);
        let options = DiscreteSigmaOptions {
            spacing,
            steps_offset: training_schedule::steps_offset(config),
            sigma_spacing: discrete_sigmas::sigma_spacing_from_config(config, DEFAULTS.sampler)?,
            karras_bounds: KarrasBounds::ConfigOrSchedule,
            interpolation: config.interpolation_type.unwrap_or(InterpolationType::Linear),
            final_sigma: config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero),
        };
        let schedule = discrete_sigmas::discrete_sigmas(&training, config, steps, &options);
        let continuous_v =
            config.timestep_type == Some(TimestepType::Continuous) && prediction == PredictionType::VPrediction;
        let timesteps = if continuous_v {
            // Continuous-time v models take `0.25 * ln(sigma)` as their timestep.
            schedule.sigmas[..schedule.sigmas.len() - 1].iter().map(|s| (0.25 * s.ln()) as f64).collect()
        } else {
            schedule.timesteps
        };
        Ok(Euler {
            timesteps,
            init_noise_sigma: discrete_sigmas::init_noise_sigma(&schedule.sigmas, spacing),
            sigmas_f64: schedule.sigmas.iter().map(|&s| s as f64).collect(),
            sigmas: schedule.sigmas,
            prediction,
        })
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas_f64)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor> {
        let sigma = sample_sigma(&self.sigmas, index)?;
        div(sample, (sigma * sigma + 1.0).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let sigma = sample_sigma(&self.sigmas, index)?;
        let sigma_next = sample_sigma(&self.sigmas, index + 1)?;
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        // `s_churn = 0`: gamma is 0 and sigma_hat is sigma (diffusers converts v with sigma and
        // epsilon with sigma_hat; without churn they are the same number).
        let sigma_hat = sigma * (0.0 + 1.0);
        let x0 = x0_from_sigma(self.prediction, &model_output, &x, sigma_hat)?;
        let derivative = div(&(&x - &x0)?, sigma_hat)?;
        let dt = sigma_next - sigma_hat;
        (x + mul(&derivative, dt)?)?.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let sigma = sample_sigma(&self.sigmas, index)?;
        original + mul(noise, sigma)?
    }
}

//! "Euler a": diffusers' `EulerAncestralDiscreteScheduler`. Each step goes down to
//! `sigma_down` deterministically and adds fresh noise of size `sigma_up`; the noise is drawn
//! at every step, also the last one where `sigma_up` is 0, so the generator stays aligned.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::{self, DiscreteSigmaOptions, KarrasBounds};
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::tensor_ops::{div, draw_noise, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::{sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "EulerAncestralDiscreteScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::RescaleKeepSigmaFinite,
    timestep_spacing: TimestepSpacing::Linspace,
};

pub struct EulerAncestral {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerAncestral {
    /// diffusers' class has no sigma options; Karras/exponential sigmas (set by the schedule
    /// choice or the config) follow `EulerDiscreteScheduler`'s formulas, as A1111 offers them.
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let spacing = training_schedule::spacing(config, &DEFAULTS);
        let options = DiscreteSigmaOptions {
            spacing,
            steps_offset: training_schedule::steps_offset(config),
            sigma_spacing: discrete_sigmas::sigma_spacing_from_config(config, DEFAULTS.sampler)?,
            karras_bounds: KarrasBounds::ConfigOrSchedule,
            interpolation: InterpolationType::Linear,
            final_sigma: FinalSigmasType::Zero,
        };
        let schedule = discrete_sigmas::discrete_sigmas(&training, config, steps, &options);
        Ok(EulerAncestral {
            timesteps: schedule.timesteps,
            init_noise_sigma: discrete_sigmas::init_noise_sigma(&schedule.sigmas, spacing),
            sigmas_f64: schedule.sigmas.iter().map(|&s| s as f64).collect(),
            sigmas: schedule.sigmas,
            prediction: training_schedule::prediction_type(config),
        })
    }
}

impl Sampler for EulerAncestral {
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
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let sigma_from = sample_sigma(&self.sigmas, index)?;
        let sigma_to = sample_sigma(&self.sigmas, index + 1)?;
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        // diffusers raises for "sample" here; x0 = model output is the natural reading.
        let x0 = x0_from_sigma(self.prediction, &model_output, &x, sigma_from)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).sqrt();
        let derivative = div(&(&x - &x0)?, sigma_from)?;
        let dt = sigma_down - sigma_from;
        let prev = (x + mul(&derivative, dt)?)?;
        let fresh = draw_noise(noise, &model_output)?;
        (prev + mul(&fresh, sigma_up)?)?.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let sigma = sample_sigma(&self.sigmas, index)?;
        original + mul(noise, sigma)?
    }
}

//! "Heun": diffusers' `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1 without churn).
//! Every step but the last takes two model evaluations: an Euler predictor to the next sigma,
//! then a corrector that averages both slopes. The timesteps and sigmas therefore repeat each
//! interior entry, and `order()` is 2.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::{self, DiscreteSigmaOptions, KarrasBounds};
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::tensor_ops::{clip, div, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr};
use super::{sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "HeunDiscreteScheduler",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: &[
        BetaSchedule::Linear,
        BetaSchedule::ScaledLinear,
        BetaSchedule::SquaredcosCapV2,
        BetaSchedule::Exp,
    ],
    zero_snr: ZeroSnr::Ignored,
    timestep_spacing: TimestepSpacing::Linspace,
};

/// What the first-order (predictor) half of a step leaves for the corrector.
struct PendingCorrection {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub struct Heun {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    clip_range: Option<f32>,
    pending: Option<PendingCorrection>,
}

impl Heun {
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
        // sigmas [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps [t0, t1, t1, ..., t_{n-1}, t_{n-1}].
        let mut sigmas = Vec::with_capacity(2 * schedule.sigmas.len());
        let count = schedule.sigmas.len();
        for (i, &sigma) in schedule.sigmas.iter().enumerate() {
            sigmas.push(sigma);
            if i != 0 && i != count - 1 {
                sigmas.push(sigma);
            }
        }
        let mut timesteps = Vec::with_capacity(2 * schedule.timesteps.len());
        for (i, &t) in schedule.timesteps.iter().enumerate() {
            timesteps.push(t);
            if i != 0 {
                timesteps.push(t);
            }
        }
        let clip_range = config.clip_sample.unwrap_or(false).then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Heun {
            timesteps,
            init_noise_sigma: discrete_sigmas::init_noise_sigma(&sigmas, spacing),
            sigmas_f64: sigmas.iter().map(|&s| s as f64).collect(),
            sigmas,
            prediction: training_schedule::prediction_type(config),
            clip_range,
            pending: None,
        })
    }
}

impl Sampler for Heun {
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
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let first_order = self.pending.is_none();
        let (sigma, sigma_next) = if first_order {
            (sample_sigma(&self.sigmas, index)?, sample_sigma(&self.sigmas, index + 1)?)
        } else {
            let previous =
                index.checked_sub(1).ok_or_else(|| candle_core::Error::Msg("Heun corrector at index 0".into()))?;
            (sample_sigma(&self.sigmas, previous)?, sample_sigma(&self.sigmas, index)?)
        };
        let sigma_hat = sigma * (0.0 + 1.0);
        // The predictor evaluates the model at sigma_hat, the corrector at sigma_next.
        let sigma_input = if first_order { sigma_hat } else { sigma_next };
        let mut x0 = x0_from_sigma(self.prediction, &model_output, &x, sigma_input)?;
        if let Some(range) = self.clip_range {
            x0 = clip(&x0, range)?;
        }
        let prev = match self.pending.take() {
            None => {
                let derivative = div(&(&x - &x0)?, sigma_hat)?;
                let dt = sigma_next - sigma_hat;
                let prev = (&x + mul(&derivative, dt)?)?;
                self.pending = Some(PendingCorrection { derivative, dt, sample: x });
                prev
            }
            Some(first) => {
                let derivative = div(&(&x - &x0)?, sigma_next)?;
                let averaged = div(&(first.derivative + derivative)?, 2.0)?;
                (first.sample + mul(&averaged, first.dt)?)?
            }
        };
        prev.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let sigma = sample_sigma(&self.sigmas, index)?;
        original + mul(noise, sigma)?
    }

    fn order(&self) -> usize {
        2
    }
}

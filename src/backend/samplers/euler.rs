//! "Euler": diffusers' `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2 with
//! `s_churn = 0`, so it never draws noise).

use candle_core::{Result, Tensor};

use super::discrete_sigmas::KarrasBounds;
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing, TimestepType,
};
use super::tensor_ops::{div, mul, to_f32};
use super::sigma_ladder::{class_schedule, LadderOptions, LadderSampler, SigmaLadder};
use super::training_schedule::{self, ClassDefaults, ZeroSnr, COMMON_BETA_SCHEDULES};
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
    ladder: SigmaLadder,
    prediction: PredictionType,
}

impl Euler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let choices = LadderOptions {
            karras_bounds: KarrasBounds::ConfigOrSchedule,
            interpolation: config.interpolation_type.unwrap_or(InterpolationType::Linear),
            final_sigma: config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero),
        };
        let (schedule, spacing) = class_schedule(config, &DEFAULTS, steps, choices)?;
        let prediction = training_schedule::prediction_type(config);
        let continuous_v =
            config.timestep_type == Some(TimestepType::Continuous) && prediction == PredictionType::VPrediction;
        let timesteps = if continuous_v {
            // Continuous-time v models take `0.25 * ln(sigma)` as their timestep.
            schedule.sigmas[..schedule.sigmas.len() - 1].iter().map(|s| (0.25 * s.ln()) as f64).collect()
        } else {
            schedule.timesteps
        };
        Ok(Euler { ladder: SigmaLadder::new(timesteps, schedule.sigmas, spacing), prediction })
    }
}

impl LadderSampler for Euler {
    fn ladder(&self) -> &SigmaLadder {
        &self.ladder
    }

    fn ladder_step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let sigma = self.ladder.sigma(index)?;
        let sigma_next = self.ladder.sigma(index + 1)?;
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
}


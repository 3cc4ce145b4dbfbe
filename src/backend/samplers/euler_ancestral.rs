//! "Euler a": diffusers' `EulerAncestralDiscreteScheduler`. Each step goes down to
//! `sigma_down` deterministically and adds fresh noise of size `sigma_up`; the noise is drawn
//! at every step, also the last one where `sigma_up` is 0, so the generator stays aligned.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::KarrasBounds;
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::tensor_ops::{div, draw_noise, mul, to_f32};
use super::sigma_ladder::{class_schedule, LadderOptions, LadderSampler, SigmaLadder};
use super::training_schedule::{self, ClassDefaults, ZeroSnr, COMMON_BETA_SCHEDULES};
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
    ladder: SigmaLadder,
    prediction: PredictionType,
}

impl EulerAncestral {
    /// diffusers' class has no sigma options; Karras/exponential sigmas (set by the schedule
    /// choice or the config) follow `EulerDiscreteScheduler`'s formulas, as A1111 offers them.
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let choices = LadderOptions {
            karras_bounds: KarrasBounds::ConfigOrSchedule,
            interpolation: InterpolationType::Linear,
            final_sigma: FinalSigmasType::Zero,
        };
        let (schedule, spacing) = class_schedule(config, &DEFAULTS, steps, choices)?;
        Ok(EulerAncestral {
            ladder: SigmaLadder::new(schedule.timesteps, schedule.sigmas, spacing),
            prediction: training_schedule::prediction_type(config),
        })
    }
}

impl LadderSampler for EulerAncestral {
    fn ladder(&self) -> &SigmaLadder {
        &self.ladder
    }

    fn ladder_step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let sigma_from = self.ladder.sigma(index)?;
        let sigma_to = self.ladder.sigma(index + 1)?;
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
}

//! "Heun": diffusers' `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1 without churn).
//! Every step but the last takes two model evaluations: an Euler predictor to the next sigma,
//! then a corrector that averages both slopes. The timesteps and sigmas therefore repeat each
//! interior entry, and `order()` is 2.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::KarrasBounds;
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::tensor_ops::{clip, div, mul, to_f32};
use super::sigma_ladder::{class_schedule, LadderOptions, LadderSampler, SigmaLadder};
use super::training_schedule::{self, ClassDefaults, ZeroSnr};
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
    ladder: SigmaLadder,
    prediction: PredictionType,
    clip_range: Option<f32>,
    pending: Option<PendingCorrection>,
}

impl Heun {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let choices = LadderOptions {
            karras_bounds: KarrasBounds::ConfigOrSchedule,
            interpolation: InterpolationType::Linear,
            final_sigma: FinalSigmasType::Zero,
        };
        let (schedule, spacing) = class_schedule(config, &DEFAULTS, steps, choices)?;
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
            ladder: SigmaLadder::new(timesteps, sigmas, spacing),
            prediction: training_schedule::prediction_type(config),
            clip_range,
            pending: None,
        })
    }
}

impl LadderSampler for Heun {
    fn ladder(&self) -> &SigmaLadder {
        &self.ladder
    }

    fn ladder_step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let first_order = self.pending.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.ladder.sigma(index)?, self.ladder.sigma(index + 1)?)
        } else {
            let previous =
                index.checked_sub(1).ok_or_else(|| candle_core::Error::Msg("Heun corrector at index 0".into()))?;
            (self.ladder.sigma(previous)?, self.ladder.sigma(index)?)
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

    fn calls_per_step(&self) -> usize {
        2
    }
}

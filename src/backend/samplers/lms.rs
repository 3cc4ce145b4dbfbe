//! "LMS": diffusers' `LMSDiscreteScheduler`, a linear multistep method of order up to 4 over the
//! derivatives of the previous steps. Its coefficients are integrals of Lagrange basis
//! polynomials between consecutive sigmas.

use candle_core::{Result, Tensor};

use super::discrete_sigmas::KarrasBounds;
use super::error::SamplerError;
use super::prediction::x0_from_sigma;
use super::scheduler_config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::tensor_ops::{div, mul, to_f32};
use super::sigma_ladder::{class_schedule, LadderOptions, LadderSampler, SigmaLadder};
use super::training_schedule::{self, ClassDefaults, ZeroSnr, COMMON_BETA_SCHEDULES};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "LMSDiscreteScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::Ignored,
    timestep_spacing: TimestepSpacing::Linspace,
};

/// diffusers' `step(order=4)` default.
const MAX_ORDER: usize = 4;

pub struct Lms {
    ladder: SigmaLadder,
    prediction: PredictionType,
    /// The most recent derivatives, oldest first (at most `MAX_ORDER`).
    derivatives: Vec<Tensor>,
}

impl Lms {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let choices = LadderOptions {
            // LMS's own `_convert_to_karras` ignores config sigma_min/sigma_max.
            karras_bounds: KarrasBounds::Schedule,
            interpolation: InterpolationType::Linear,
            final_sigma: FinalSigmasType::Zero,
        };
        let (schedule, spacing) = class_schedule(config, &DEFAULTS, steps, choices)?;
        Ok(Lms {
            ladder: SigmaLadder::new(schedule.timesteps, schedule.sigmas, spacing),
            prediction: training_schedule::prediction_type(config),
            derivatives: Vec::with_capacity(MAX_ORDER),
        })
    }

    /// `∫_{σ_t}^{σ_{t+1}} Π_{k≠j} (τ - σ_{t-k}) / (σ_{t-j} - σ_{t-k}) dτ`. The integrand is a
    /// polynomial of degree < 4, so 4-point Gauss-Legendre quadrature is exact (diffusers uses
    /// scipy's adaptive `quad`, which is exact for it as well).
    fn coefficient(&self, order: usize, index: usize, current: usize) -> Result<f64> {
        let sigma = |i: usize| -> Result<f64> { Ok(f64::from(self.ladder.sigma(i)?)) };
        let basis = |tau: f64| -> Result<f64> {
            let mut product = 1.0;
            for k in (0..order).filter(|&k| k != current) {
                product *= (tau - sigma(index - k)?) / (sigma(index - current)? - sigma(index - k)?);
            }
            Ok(product)
        };
        let (a, b) = (sigma(index)?, sigma(index + 1)?);
        const NODES: [f64; 2] = [0.339_981_043_584_856_26, 0.861_136_311_594_052_6];
        const WEIGHTS: [f64; 2] = [0.652_145_154_862_546_1, 0.347_854_845_137_453_9];
        let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
        let mut integral = 0.0;
        for (node, weight) in NODES.iter().zip(WEIGHTS) {
            integral += weight * (basis(mid - half * node)? + basis(mid + half * node)?);
        }
        Ok(integral * half)
    }
}

impl LadderSampler for Lms {
    fn ladder(&self) -> &SigmaLadder {
        &self.ladder
    }

    fn ladder_step(&mut self, model_output: &Tensor, index: usize, sample: &Tensor, _noise: &mut dyn NoiseSource) -> Result<Tensor> {
        let sigma = self.ladder.sigma(index)?;
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let x0 = x0_from_sigma(self.prediction, &model_output, &x, sigma)?;
        let derivative = div(&(&x - &x0)?, sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > MAX_ORDER {
            self.derivatives.remove(0);
        }
        // diffusers takes the order from the step index, not from the history: an img2img run
        // that starts at index 3 uses order-4 coefficients with the one derivative it has (the
        // `zip` stops at the shorter list). Kept so the numbers match.
        let order = (index + 1).min(MAX_ORDER);
        let mut update: Option<Tensor> = None;
        for (current, derivative) in self.derivatives.iter().rev().take(order).enumerate() {
            let coefficient = self.coefficient(order, index, current)? as f32;
            let term = mul(derivative, coefficient)?;
            update = Some(match update {
                None => term,
                Some(sum) => (sum + term)?,
            });
        }
        let prev = match update {
            Some(update) => (x + update)?,
            None => x,
        };
        prev.to_dtype(sample.dtype())
    }
}

//! "LCM": diffusers' `LCMScheduler` (latent consistency models). Each step jumps to a denoised
//! estimate through the consistency boundary condition, then re-noises it to the next timestep
//! with fresh noise; the last step returns the estimate and draws nothing. The timesteps are a
//! subset of the distillation schedule, so `timestep_spacing` (and SGM Uniform) has no effect.

use candle_core::{Result, Tensor};

use super::error::SamplerError;
use super::prediction::x0_from_alpha;
use super::scheduler_config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use super::tensor_ops::{draw_noise, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::x0_clipping::X0Clipping;
use super::{loop_timestep, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "LCMScheduler",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: BetaSchedule::ScaledLinear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::Rescale,
    timestep_spacing: TimestepSpacing::Leading,
};

/// The consistency models' `sigma_data`.
const SIGMA_DATA: f32 = 0.5;

pub struct Lcm {
    training: TrainingSchedule,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    clipping: X0Clipping,
    timestep_scaling: f32,
}

impl Lcm {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let original_steps = config.original_inference_steps.unwrap_or(50);
        if original_steps == 0 || original_steps > training.num_train_timesteps {
            return Err(SamplerError::config(
                "original_inference_steps",
                format!("must be between 1 and {}", training.num_train_timesteps),
            ));
        }
        if steps > original_steps {
            return Err(SamplerError::steps(
                steps,
                format!("LCM serves at most original_inference_steps = {original_steps} steps"),
            ));
        }
        // The distillation schedule, descending: k*i - 1 for i = original_steps..=1.
        let k = training.num_train_timesteps / original_steps;
        let origin: Vec<f64> = (1..=original_steps).rev().map(|i| (i * k) as f64 - 1.0).collect();
        let timesteps = super::numpy_compat::linspace_open(0.0, origin.len() as f64, steps)
            .into_iter()
            .map(|position| origin[(position.floor() as usize).min(origin.len() - 1)])
            .collect();
        Ok(Lcm {
            training,
            timesteps,
            prediction: training_schedule::prediction_type(config),
            clipping: X0Clipping::from_config(config, false),
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
        })
    }
}

impl Sampler for Lcm {
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
        let prev_t = self.timesteps.get(index + 1).copied().unwrap_or(t);
        let alpha_prod_t = self.training.alpha_cumprod_at(t)?;
        let alpha_prod_t_prev = self.training.alpha_cumprod_at(prev_t)?;
        let scaled_t = t as f32 * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled_t / (scaled_t * scaled_t + SIGMA_DATA * SIGMA_DATA).sqrt();
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let x0 = self.clipping.apply(&x0_from_alpha(self.prediction, &model_output, &x, alpha_prod_t)?)?;
        let denoised = (mul(&x0, c_out)? + mul(&x, c_skip)?)?;
        let prev = if index + 1 != self.timesteps.len() {
            let fresh = draw_noise(noise, &model_output)?;
            (mul(&denoised, alpha_prod_t_prev.sqrt())? + mul(&fresh, (1.0 - alpha_prod_t_prev).sqrt())?)?
        } else {
            denoised
        };
        prev.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let t = loop_timestep(&self.timesteps, index)?;
        let alpha_prod = self.training.alpha_cumprod_at(t)?;
        mul(original, alpha_prod.sqrt())? + mul(noise, (1.0 - alpha_prod).sqrt())?
    }
}

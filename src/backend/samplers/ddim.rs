//! "DDIM": diffusers' `DDIMScheduler` with `eta = 0` (deterministic; no noise is drawn).

use candle_core::{Result, Tensor};

use super::error::SamplerError;
use super::prediction::{eps_from_alpha, x0_from_alpha};
use super::scheduler_config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules;
use super::tensor_ops::{mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::x0_clipping::X0Clipping;
use super::{loop_timestep, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "DDIMScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::Rescale,
    timestep_spacing: TimestepSpacing::Leading,
};

pub struct Ddim {
    training: TrainingSchedule,
    timesteps: Vec<f64>,
    /// diffusers steps back by `num_train_timesteps // steps` whatever the spacing.
    step_ratio: usize,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    clipping: X0Clipping,
}

impl Ddim {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let timesteps = sigma_schedules::integer_timesteps(
            training_schedule::spacing(config, &DEFAULTS),
            training.num_train_timesteps,
            steps,
            training_schedule::steps_offset(config),
        );
        let final_alpha_cumprod =
            if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { training.alphas_cumprod[0] };
        Ok(Ddim {
            step_ratio: training.num_train_timesteps / steps,
            training,
            timesteps,
            final_alpha_cumprod,
            prediction: training_schedule::prediction_type(config),
            clipping: X0Clipping::from_config(config, true),
        })
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let t = loop_timestep(&self.timesteps, index)?;
        let prev_t = t - self.step_ratio as f64;
        let alpha_prod_t = self.training.alpha_cumprod_at(t)?;
        let alpha_prod_t_prev =
            if prev_t >= 0.0 { self.training.alpha_cumprod_at(prev_t)? } else { self.final_alpha_cumprod };
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let x0 = x0_from_alpha(self.prediction, &model_output, &x, alpha_prod_t)?;
        let eps = eps_from_alpha(self.prediction, &model_output, &x, &x0, alpha_prod_t)?;
        let x0 = self.clipping.apply(&x0)?;
        // eta = 0: std_dev_t = 0, so the direction keeps all of sqrt(1 - alpha_prev).
        let std_dev_t = 0f32;
        let direction = mul(&eps, (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt())?;
        (mul(&x0, alpha_prod_t_prev.sqrt())? + direction)?.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let t = loop_timestep(&self.timesteps, index)?;
        let alpha_prod = self.training.alpha_cumprod_at(t)?;
        mul(original, alpha_prod.sqrt())? + mul(noise, (1.0 - alpha_prod).sqrt())?
    }
}

//! The training noise schedule every sampler builds in its `__init__`, with the class's own
//! defaults for the keys the config file leaves out.

use super::error::SamplerError;
use super::scheduler_config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules::{self, BetaParams};

/// How a class treats `rescale_betas_zero_snr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroSnr {
    /// Not a parameter of the class (Heun, LMS): the key is ignored.
    Ignored,
    /// Rescale the betas (DDIM, DDPM, LCM).
    Rescale,
    /// Rescale, then set the last cumulative alpha to 2^-24 so its sigma stays finite (the
    /// sigma-based classes: Euler, Euler a, DPM-Solver, UniPC).
    RescaleKeepSigmaFinite,
}

/// A class's defaults for the training-schedule keys.
#[derive(Debug, Clone, Copy)]
pub struct ClassDefaults {
    pub sampler: &'static str,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// The beta schedules the class implements (others make diffusers raise).
    pub beta_schedules: &'static [BetaSchedule],
    pub zero_snr: ZeroSnr,
    pub timestep_spacing: TimestepSpacing,
}

/// Upper bound accepted for `num_train_timesteps`.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The three beta schedules every class implements.
pub const COMMON_BETA_SCHEDULES: &[BetaSchedule] =
    &[BetaSchedule::Linear, BetaSchedule::ScaledLinear, BetaSchedule::SquaredcosCapV2];

/// The resolved training schedule.
#[derive(Debug, Clone)]
pub struct TrainingSchedule {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub alphas_cumprod: Vec<f32>,
}

impl TrainingSchedule {
    pub fn from_config(config: &SchedulerConfig, defaults: &ClassDefaults) -> Result<Self, SamplerError> {
        let num_train_timesteps = config.num_train_timesteps.unwrap_or(1000);
        // Real models use 1000; the cap only keeps a broken file from allocating gigabytes.
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
            return Err(SamplerError::config(
                "num_train_timesteps",
                format!("must be between 2 and {MAX_TRAIN_TIMESTEPS}, got {num_train_timesteps}"),
            ));
        }
        let beta_schedule = config.beta_schedule.unwrap_or(defaults.beta_schedule);
        let trained_betas = config.trained_betas.as_deref();
        if trained_betas.is_none() && !defaults.beta_schedules.contains(&beta_schedule) {
            return Err(SamplerError::unsupported(defaults.sampler, format!("beta_schedule {beta_schedule:?}")));
        }
        if let Some(betas) = trained_betas {
            if betas.len() != num_train_timesteps {
                return Err(SamplerError::config(
                    "trained_betas",
                    format!("has {} entries for {num_train_timesteps} training timesteps", betas.len()),
                ));
            }
        }
        let params = BetaParams {
            num_train_timesteps,
            beta_start: config.beta_start.unwrap_or(defaults.beta_start),
            beta_end: config.beta_end.unwrap_or(defaults.beta_end),
            schedule: beta_schedule,
            trained_betas,
        };
        let mut betas = sigma_schedules::training_betas(&params)?;
        let rescale = config.rescale_betas_zero_snr.unwrap_or(false) && defaults.zero_snr != ZeroSnr::Ignored;
        if rescale {
            betas = sigma_schedules::rescale_zero_terminal_snr(&betas);
        }
        let mut alphas_cumprod = sigma_schedules::alphas_cumprod(&betas);
        if rescale && defaults.zero_snr == ZeroSnr::RescaleKeepSigmaFinite {
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(TrainingSchedule { num_train_timesteps, beta_schedule, alphas_cumprod })
    }

    /// The training sigmas, ascending in timestep (float32).
    pub fn sigmas(&self) -> Vec<f32> {
        sigma_schedules::training_sigmas(&self.alphas_cumprod)
    }

    /// `alphas_cumprod[t]` for an integer timestep, as a tensor-free lookup that cannot panic.
    pub fn alpha_cumprod_at(&self, timestep: f64) -> candle_core::Result<f32> {
        let index = timestep as i64;
        if timestep.fract() != 0.0 || index < 0 || index as usize >= self.alphas_cumprod.len() {
            return Err(candle_core::Error::Msg(format!("timestep {timestep} outside the training schedule")));
        }
        Ok(self.alphas_cumprod[index as usize])
    }
}

/// `timestep_spacing` after the class default.
pub fn spacing(config: &SchedulerConfig, defaults: &ClassDefaults) -> TimestepSpacing {
    config.timestep_spacing.unwrap_or(defaults.timestep_spacing)
}

/// `prediction_type` (every class defaults to epsilon).
pub fn prediction_type(config: &SchedulerConfig) -> PredictionType {
    config.prediction_type.unwrap_or(PredictionType::Epsilon)
}

/// `steps_offset` (every class defaults to 0).
pub fn steps_offset(config: &SchedulerConfig) -> usize {
    config.steps_offset.unwrap_or(0)
}

/// diffusers refuses more inference steps than training timesteps (and the grids degenerate).
pub fn check_steps(steps: usize, schedule: &TrainingSchedule) -> Result<(), SamplerError> {
    if steps == 0 {
        return Err(SamplerError::steps(steps, "at least 1 step is needed"));
    }
    if steps > schedule.num_train_timesteps {
        return Err(SamplerError::steps(
            steps,
            format!("more steps than the {} training timesteps", schedule.num_train_timesteps),
        ));
    }
    Ok(())
}

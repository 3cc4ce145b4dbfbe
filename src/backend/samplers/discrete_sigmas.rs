//! The `set_timesteps` of diffusers' sigma-based discrete schedulers (Euler, Euler a, Heun,
//! LMS): spaced timesteps, their interpolated sigmas, optional Karras/exponential re-spacing
//! mapped back to fractional timesteps, and a final sigma.

use super::error::SamplerError;
use super::scheduler_config::{FinalSigmasType, InterpolationType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules::{self, SigmaSpacing};
use super::training_schedule::TrainingSchedule;

/// Where Karras re-spacing takes its bounds from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KarrasBounds {
    /// `sigma_min`/`sigma_max` from the config when present (diffusers' `hasattr(self.config,
    /// ...)`, which also sees keys that are not parameters of the class), else the inference
    /// sigmas' ends.
    ConfigOrSchedule,
    /// Always the inference sigmas' ends (LMS).
    Schedule,
}

#[derive(Debug, Clone, Copy)]
pub struct DiscreteSigmaOptions {
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub sigma_spacing: SigmaSpacing,
    pub karras_bounds: KarrasBounds,
    pub interpolation: InterpolationType,
    pub final_sigma: FinalSigmasType,
}

/// Timesteps (float32 values) and sigmas (float32, one more than the timesteps).
#[derive(Debug, Clone)]
pub struct DiscreteSigmas {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f32>,
}

/// Which of Karras / exponential sigmas the config asks for (at most one, as diffusers checks).
pub fn sigma_spacing_from_config(
    config: &SchedulerConfig,
    sampler: &'static str,
) -> Result<SigmaSpacing, SamplerError> {
    let karras = config.use_karras_sigmas.unwrap_or(false);
    let exponential = config.use_exponential_sigmas.unwrap_or(false);
    if config.use_beta_sigmas.unwrap_or(false) {
        return Err(SamplerError::unsupported(sampler, "use_beta_sigmas"));
    }
    match (karras, exponential) {
        (true, true) => Err(SamplerError::config(
            "use_karras_sigmas",
            "only one of use_karras_sigmas and use_exponential_sigmas can be set",
        )),
        (true, false) => Ok(SigmaSpacing::Karras),
        (false, true) => Ok(SigmaSpacing::Exponential),
        (false, false) => Ok(SigmaSpacing::Timesteps),
    }
}

pub fn discrete_sigmas(
    training: &TrainingSchedule,
    config: &SchedulerConfig,
    steps: usize,
    options: &DiscreteSigmaOptions,
) -> DiscreteSigmas {
    let mut timesteps =
        sigma_schedules::float_timesteps(options.spacing, training.num_train_timesteps, steps, options.steps_offset);
    let training_sigmas = training.sigmas();
    let log_sigmas = sigma_schedules::log_sigmas(&training_sigmas);
    let mut sigmas = match options.interpolation {
        InterpolationType::Linear => sigma_schedules::interpolate_sigmas(&timesteps, &training_sigmas),
        InterpolationType::LogLinear => log_linear_sigmas(&training_sigmas, steps),
    };
    let schedule_min = sigmas.last().copied().unwrap_or(0.0);
    let schedule_max = sigmas.first().copied().unwrap_or(0.0);
    let (sigma_min, sigma_max) = match (options.sigma_spacing, options.karras_bounds) {
        (SigmaSpacing::Karras, KarrasBounds::Schedule) => (schedule_min, schedule_max),
        _ => (config.sigma_min.unwrap_or(schedule_min), config.sigma_max.unwrap_or(schedule_max)),
    };
    if let Some((respaced, respaced_timesteps)) =
        sigma_schedules::respaced_sigmas(options.sigma_spacing, sigma_min, sigma_max, steps, &log_sigmas)
    {
        sigmas = respaced;
        timesteps = respaced_timesteps.into_iter().map(|t| t as f32 as f64).collect();
    }
    let final_sigma = match options.final_sigma {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => training_sigmas.first().copied().unwrap_or(0.0) as f64,
    };
    sigmas.push(final_sigma);
    DiscreteSigmas { timesteps, sigmas: sigmas.into_iter().map(|s| s as f32).collect() }
}

/// Euler's `interpolation_type="log_linear"`: `torch.linspace(log(sigma_max), log(sigma_min),
/// steps + 1).exp()` in float32. (diffusers keeps all `steps + 1` of them, so with the final
/// sigma appended the last step ends at the smallest training sigma, not at 0.)
fn log_linear_sigmas(training_sigmas: &[f32], steps: usize) -> Vec<f64> {
    let (Some(&min), Some(&max)) = (training_sigmas.first(), training_sigmas.last()) else {
        return Vec::new();
    };
    sigma_schedules::torch_linspace_f32(max.ln(), min.ln(), steps + 1).into_iter().map(|log| log.exp() as f64).collect()
}

/// `init_noise_sigma` of the sigma-based schedulers: the largest sigma for `linspace` and
/// `trailing` grids, `sqrt(max² + 1)` for `leading` (float32 arithmetic).
pub fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

//! Samplers (diffusers scheduler classes under A1111 names) behind one small trait.
//!
//! A sampler is built per job from the model's own `scheduler_config.json` the way diffusers'
//! `SamplerClass.from_config(config)` does: keys present in the file override the class's
//! defaults, absent keys take that class's own default. The schedule (`Karras`, ...) sets the
//! class's sigma options.

mod ddim;
mod ddpm;
mod discrete_sigmas;
mod dpm_solver_multistep;
mod dpmpp_2m;
mod dpmpp_2m_sde;
mod error;
mod euler;
mod euler_ancestral;
mod heun;
mod lcm;
mod lms;
mod numpy_compat;
mod prediction;
pub mod scheduler_config;
pub mod sigma_schedules;
mod sigma_ladder;
mod tensor_ops;
mod training_schedule;
mod unipc;
mod x0_clipping;

use candle_core::{Result, Tensor};

use crate::backend::request::{SamplerKind, ScheduleKind};
use crate::backend::rng::NoiseSource;

pub use error::SamplerError;
pub use scheduler_config::SchedulerConfig;

/// One denoising schedule in progress. The pipeline drives it as diffusers' pipelines do:
///
/// ```text
/// for (i, t) in sampler.timesteps()[start..].iter().enumerate() (i absolute: start + k) {
///     x_in = sampler.scale_model_input(&latents, i)
///     eps  = unet(x_in, t) (+ CFG)
///     latents = sampler.step(&eps, i, &latents, noise)
/// }
/// ```
///
/// img2img starts at `start = t_start * order()` after `add_noise(image_latents, noise, start)`.
///
/// `step` is stateful for the multistep samplers (LMS, DPM++, UniPC keep earlier outputs; Heun
/// alternates predictor and corrector): call it once per index, in order, from `start`. A new
/// image needs a new sampler. Indices past the schedule are errors, never panics. Samplers
/// compute in float32 and return the dtype of `sample`.
pub trait Sampler: Send {
    /// The timestep value fed to the UNet for each model evaluation, in loop order (fractional
    /// for Euler-type samplers; Heun repeats entries, so this has one entry per UNet call).
    fn timesteps(&self) -> &[f64];

    /// The sigma of each loop index, then the final one (`timesteps().len() + 1` entries; one
    /// more with Euler's `log_linear` interpolation, as in diffusers), for the sigma-based
    /// samplers; `None` for DDIM, DDPM and LCM, which have none.
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// Standard deviation of the initial noise (txt2img latents = randn * this); 1 for the
    /// variance-preserving samplers (DDIM, DDPM, LCM, DPM-Solver, UniPC).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Scale the UNet input at loop index `index`; the variance-preserving samplers feed the
    /// sample as it is.
    fn scale_model_input(&self, sample: &Tensor, _index: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// One update at loop index `index`, from the (guided) model output. Stochastic samplers
    /// draw their noise from `noise`, in the order diffusers draws it.
    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;

    /// Noise clean latents to the level of loop index `index` (img2img start).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor>;

    /// 2 for Heun (two model calls per step), else 1.
    fn order(&self) -> usize {
        1
    }
}

/// Build the sampler `kind` for `steps` steps from the model's scheduler config, the way
/// diffusers' `SamplerClass.from_config(config, **schedule_options)` followed by
/// `set_timesteps(steps)` does. The schedule maps onto diffusers' options: Karras sets
/// `use_karras_sigmas`, Exponential `use_exponential_sigmas` (each clearing the other), SGM
/// Uniform sets `timestep_spacing="trailing"`. DDIM, DDPM and LCM have no sigma options and
/// ignore Karras/Exponential; LCM's timesteps come from its distillation schedule, so it
/// ignores SGM Uniform too.
pub fn build_sampler(
    kind: SamplerKind,
    schedule: ScheduleKind,
    config: &SchedulerConfig,
    steps: usize,
) -> std::result::Result<Box<dyn Sampler>, SamplerError> {
    if steps == 0 {
        return Err(SamplerError::Steps { steps, message: "at least 1 step is needed".into() });
    }
    let config = &apply_schedule(config, schedule);
    Ok(match kind {
        SamplerKind::Euler => Box::new(euler::Euler::new(config, steps)?),
        SamplerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(config, steps)?),
        SamplerKind::Heun => Box::new(heun::Heun::new(config, steps)?),
        SamplerKind::Lms => Box::new(lms::Lms::new(config, steps)?),
        SamplerKind::Ddim => Box::new(ddim::Ddim::new(config, steps)?),
        SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(config, steps)?),
        SamplerKind::DpmPp2m => Box::new(dpmpp_2m::new(config, steps)?),
        SamplerKind::DpmPp2mSde => Box::new(dpmpp_2m_sde::new(config, steps)?),
        SamplerKind::UniPc => Box::new(unipc::UniPc::new(config, steps)?),
        SamplerKind::Lcm => Box::new(lcm::Lcm::new(config, steps)?),
    })
}

/// The config with the schedule's diffusers options applied (the `from_config` kwargs).
fn apply_schedule(config: &SchedulerConfig, schedule: ScheduleKind) -> SchedulerConfig {
    let mut config = config.clone();
    match schedule {
        ScheduleKind::Automatic => {}
        ScheduleKind::Karras => {
            config.use_karras_sigmas = Some(true);
            config.use_exponential_sigmas = Some(false);
            config.use_beta_sigmas = Some(false);
        }
        ScheduleKind::Exponential => {
            config.use_karras_sigmas = Some(false);
            config.use_exponential_sigmas = Some(true);
            config.use_beta_sigmas = Some(false);
        }
        ScheduleKind::SgmUniform => {
            config.timestep_spacing = Some(scheduler_config::TimestepSpacing::Trailing);
        }
    }
    config
}

/// `sigmas[index]`, or an error instead of a panic when the loop runs past the schedule.
fn sample_sigma(sigmas: &[f32], index: usize) -> Result<f32> {
    sigmas.get(index).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!("sampler index {index} past the schedule ({} sigmas)", sigmas.len()))
    })
}

/// `timesteps[index]`, or an error when the loop runs past the schedule.
fn loop_timestep(timesteps: &[f64], index: usize) -> Result<f64> {
    timesteps.get(index).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!("sampler index {index} past the schedule ({} timesteps)", timesteps.len()))
    })
}

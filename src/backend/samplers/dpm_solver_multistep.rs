//! diffusers' `DPMSolverMultistepScheduler` at `solver_order = 2` with the data-prediction
//! ("++") algorithms: the schedule, the history of x0 estimates and the choice of first- or
//! second-order update. The update formulas live with each variant (`dpmpp_2m`, `dpmpp_2m_sde`).

use candle_core::{Result, Tensor};

use super::discrete_sigmas;
use super::error::SamplerError;
use super::prediction::{alpha_sigma, lambda, x0_from_alpha_sigma};
use super::scheduler_config::{BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules::{self, SigmaSpacing};
use super::tensor_ops::{draw_noise, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::x0_clipping::X0Clipping;
use super::{dpmpp_2m, dpmpp_2m_sde, sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "DPMSolverMultistepScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::RescaleKeepSigmaFinite,
    timestep_spacing: TimestepSpacing::Linspace,
};

/// `algorithm_type`: "dpmsolver++" (DPM++ 2M) or "sde-dpmsolver++" (DPM++ 2M SDE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmAlgorithm {
    DpmSolverPp,
    SdeDpmSolverPp,
}

/// `solver_type`: how the second-order term is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// The scalars of one update, all float32 as diffusers computes them from 0-d tensors.
#[derive(Debug, Clone, Copy)]
pub struct StepScalars {
    pub alpha_t: f32,
    pub sigma_t: f32,
    pub sigma_s0: f32,
    /// `lambda_t - lambda_s0`.
    pub h: f32,
}

pub struct DpmSolverMultistep {
    algorithm: DpmAlgorithm,
    solver_type: SolverType,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    prediction: PredictionType,
    clipping: X0Clipping,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// The x0 estimate of the previous step (the second-order history).
    previous_x0: Option<Tensor>,
    lower_order_nums: usize,
}

impl DpmSolverMultistep {
    pub fn new(
        config: &SchedulerConfig,
        steps: usize,
        algorithm: DpmAlgorithm,
    ) -> std::result::Result<Self, SamplerError> {
        let sampler = DEFAULTS.sampler;
        for (flag, name) in [
            (config.use_lu_lambdas, "use_lu_lambdas"),
            (config.use_flow_sigmas, "use_flow_sigmas"),
            (config.use_dynamic_shifting, "use_dynamic_shifting"),
        ] {
            if flag.unwrap_or(false) {
                return Err(SamplerError::unsupported(sampler, name));
            }
        }
        if let Some(variance) = config.variance_type.as_deref() {
            return Err(SamplerError::unsupported(sampler, format!("variance_type {variance:?}")));
        }
        let solver_type = match config.solver_type.as_deref().unwrap_or("midpoint") {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => return Err(SamplerError::config("solver_type", format!("unsupported value {other:?}"))),
        };
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let sigma_spacing = discrete_sigmas::sigma_spacing_from_config(config, DEFAULTS.sampler)?;
        let final_sigmas_type = config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        let (timesteps, sigmas) = schedule(&training, config, steps, sigma_spacing, final_sigmas_type);
        Ok(DpmSolverMultistep {
            algorithm,
            solver_type,
            sigmas_f64: sigmas.iter().map(|&s| s as f64).collect(),
            timesteps,
            sigmas,
            prediction: training_schedule::prediction_type(config),
            clipping: X0Clipping::thresholding_only(config),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigma_zero: final_sigmas_type == FinalSigmasType::Zero,
            previous_x0: None,
            lower_order_nums: 0,
        })
    }

    fn scalars(&self, sigma_next: f32, sigma_current: f32) -> (StepScalars, f32) {
        let (alpha_t, sigma_t) = alpha_sigma(sigma_next);
        let (alpha_s0, sigma_s0) = alpha_sigma(sigma_current);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        (StepScalars { alpha_t, sigma_t, sigma_s0, h: lambda_t - lambda_s0 }, lambda_s0)
    }
}

/// `set_timesteps`: integer timesteps and float32 sigmas (one more than the timesteps).
fn schedule(
    training: &TrainingSchedule,
    config: &SchedulerConfig,
    steps: usize,
    sigma_spacing: SigmaSpacing,
    final_sigmas_type: FinalSigmasType,
) -> (Vec<f64>, Vec<f32>) {
    let n = training.num_train_timesteps;
    // `lambda_min_clipped` cuts off the noisiest timesteps whose lambda lies below it.
    let lambda_min_clipped = config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
    let clipped = training
        .alphas_cumprod
        .iter()
        .filter(|&&a| (lambda(a.sqrt(), (1.0 - a).sqrt()) as f64) < lambda_min_clipped)
        .count();
    let last_timestep = n - clipped.min(n - 1);
    let mut timesteps = sigma_schedules::multistep_timesteps(
        training_schedule::spacing(config, &DEFAULTS),
        n,
        last_timestep,
        steps,
        training_schedule::steps_offset(config),
    );
    let training_sigmas = training.sigmas();
    let log_sigmas = sigma_schedules::log_sigmas(&training_sigmas);
    // Karras/exponential bounds: the whole training range (the file's sigma_min/sigma_max win).
    let sigma_min = config.sigma_min.unwrap_or(training_sigmas[0] as f64);
    let sigma_max = config.sigma_max.unwrap_or(training_sigmas[n - 1] as f64);
    let mut sigmas = match sigma_schedules::respaced_sigmas(sigma_spacing, sigma_min, sigma_max, steps, &log_sigmas) {
        Some((sigmas, respaced)) => {
            // Karras timesteps are rounded (except for the cosine schedule); all are then cast
            // to int64, which truncates.
            let round =
                sigma_spacing == SigmaSpacing::Karras && training.beta_schedule != BetaSchedule::SquaredcosCapV2;
            timesteps = respaced.into_iter().map(|t| if round { t.round_ties_even() } else { t.trunc() }).collect();
            sigmas
        }
        None => sigma_schedules::interpolate_sigmas(&timesteps, &training_sigmas),
    };
    sigmas.push(match final_sigmas_type {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => training_sigmas[0] as f64,
    });
    (timesteps, sigmas.into_iter().map(|s| s as f32).collect())
}

impl Sampler for DpmSolverMultistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas_f64)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let count = self.timesteps.len();
        // diffusers' `lower_order_final`; its `lower_order_second` only matters for order 3.
        let short_schedule = self.lower_order_final && count < 15;
        let lower_order_final = index + 1 == count && (self.euler_at_final || short_schedule || self.final_sigma_zero);

        let sigma_s0 = sample_sigma(&self.sigmas, index)?;
        let sigma_t = sample_sigma(&self.sigmas, index + 1)?;
        let model_output = to_f32(model_output)?;
        let x = to_f32(sample)?;
        let (alpha_s0, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let x0 = x0_from_alpha_sigma(self.prediction, &model_output, &x, alpha_s0, sigma_s0_vp)?;
        let x0 = self.clipping.apply(&x0)?;
        let fresh = match self.algorithm {
            DpmAlgorithm::SdeDpmSolverPp => Some(draw_noise(noise, &model_output)?),
            DpmAlgorithm::DpmSolverPp => None,
        };
        let (scalars, lambda_s0) = self.scalars(sigma_t, sigma_s0);
        let previous = self.previous_x0.replace(x0.clone());
        let prev = match previous {
            Some(m1) if self.lower_order_nums >= 1 && !lower_order_final => {
                let sigma_s1 = sample_sigma(
                    &self.sigmas,
                    index
                        .checked_sub(1)
                        .ok_or_else(|| candle_core::Error::Msg("DPM-Solver second-order step at index 0".into()))?,
                )?;
                let (alpha_s1, sigma_s1_vp) = alpha_sigma(sigma_s1);
                let h_0 = lambda_s0 - lambda(alpha_s1, sigma_s1_vp);
                let r0 = h_0 / scalars.h;
                let d1 = mul(&(&x0 - &m1)?, 1.0 / r0)?;
                match self.algorithm {
                    DpmAlgorithm::DpmSolverPp => dpmpp_2m::second_order(&x, &x0, &d1, &scalars, self.solver_type)?,
                    DpmAlgorithm::SdeDpmSolverPp => {
                        let fresh =
                            fresh.as_ref().ok_or_else(|| candle_core::Error::Msg("missing SDE noise".into()))?;
                        dpmpp_2m_sde::second_order(&x, &x0, &d1, fresh, &scalars, self.solver_type)?
                    }
                }
            }
            _ => match (self.algorithm, fresh.as_ref()) {
                (DpmAlgorithm::SdeDpmSolverPp, Some(fresh)) => dpmpp_2m_sde::first_order(&x, &x0, fresh, &scalars)?,
                _ => dpmpp_2m::first_order(&x, &x0, &scalars)?,
            },
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        prev.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sample_sigma(&self.sigmas, index)?);
        mul(original, alpha_t)? + mul(noise, sigma_t)?
    }
}

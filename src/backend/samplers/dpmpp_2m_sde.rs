//! "DPM++ 2M SDE": diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type="sde-dpmsolver++"`, `solver_order=2`. Every step, the last included, draws
//! one fresh noise tensor. The schedule and step logic are shared with DPM++ 2M in
//! `dpm_solver_multistep`; these are the stochastic update formulas.

use candle_core::{Result, Tensor};

use super::dpm_solver_multistep::{DpmAlgorithm, DpmSolverMultistep, SolverType, StepScalars};
use super::error::SamplerError;
use super::scheduler_config::SchedulerConfig;
use super::tensor_ops::mul;

pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<DpmSolverMultistep, SamplerError> {
    DpmSolverMultistep::new(config, steps, DpmAlgorithm::SdeDpmSolverPp)
}

/// `sigma_t * sqrt(1 - exp(-2h)) * noise`, the injected noise of every SDE update.
fn noise_term(noise: &Tensor, s: &StepScalars) -> Result<Tensor> {
    mul(noise, s.sigma_t * (1.0 - (-2.0 * s.h).exp()).sqrt())
}

/// `x_t = (sigma_t / sigma_s * exp(-h)) * x + (alpha_t * (1 - exp(-2h))) * x0 + noise term`.
pub fn first_order(sample: &Tensor, x0: &Tensor, noise: &Tensor, s: &StepScalars) -> Result<Tensor> {
    let decay = s.sigma_t / s.sigma_s0 * (-s.h).exp();
    let phi = s.alpha_t * (1.0 - (-2.0 * s.h).exp());
    (mul(sample, decay)? + mul(x0, phi)?)? + noise_term(noise, s)?
}

/// The multistep second-order SDE update from `D0 = x0` and `D1 = (x0 - x0_prev) / r0`.
pub fn second_order(
    sample: &Tensor,
    d0: &Tensor,
    d1: &Tensor,
    noise: &Tensor,
    s: &StepScalars,
    solver: SolverType,
) -> Result<Tensor> {
    let decay = s.sigma_t / s.sigma_s0 * (-s.h).exp();
    let phi = s.alpha_t * (1.0 - (-2.0 * s.h).exp());
    let d1_weight = match solver {
        SolverType::Midpoint => 0.5 * phi,
        SolverType::Heun => s.alpha_t * ((1.0 - (-2.0 * s.h).exp()) / (-2.0 * s.h) + 1.0),
    };
    let deterministic = ((mul(sample, decay)? + mul(d0, phi)?)? + mul(d1, d1_weight)?)?;
    deterministic + noise_term(noise, s)?
}

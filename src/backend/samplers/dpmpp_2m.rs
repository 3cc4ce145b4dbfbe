//! "DPM++ 2M": diffusers' `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
//! `solver_order=2` (deterministic). The schedule and step logic are shared with DPM++ 2M SDE in
//! `dpm_solver_multistep`; these are the deterministic update formulas.

use candle_core::{Result, Tensor};

use super::dpm_solver_multistep::{DpmAlgorithm, DpmSolverMultistep, SolverType, StepScalars};
use super::error::SamplerError;
use super::scheduler_config::SchedulerConfig;
use super::tensor_ops::mul;

pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<DpmSolverMultistep, SamplerError> {
    DpmSolverMultistep::new(config, steps, DpmAlgorithm::DpmSolverPp)
}

/// `x_t = (sigma_t / sigma_s) * x - (alpha_t * (exp(-h) - 1)) * x0`.
pub fn first_order(sample: &Tensor, x0: &Tensor, s: &StepScalars) -> Result<Tensor> {
    mul(sample, s.sigma_t / s.sigma_s0)? - mul(x0, s.alpha_t * ((-s.h).exp() - 1.0))?
}

/// The multistep second-order update from `D0 = x0` and `D1 = (x0 - x0_prev) / r0`.
pub fn second_order(sample: &Tensor, d0: &Tensor, d1: &Tensor, s: &StepScalars, solver: SolverType) -> Result<Tensor> {
    let phi = s.alpha_t * ((-s.h).exp() - 1.0);
    let base = (mul(sample, s.sigma_t / s.sigma_s0)? - mul(d0, phi)?)?;
    match solver {
        SolverType::Midpoint => base - mul(d1, 0.5 * phi)?,
        SolverType::Heun => base + mul(d1, s.alpha_t * (((-s.h).exp() - 1.0) / s.h + 1.0))?,
    }
}

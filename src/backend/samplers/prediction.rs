//! Turning the model output into a clean-sample (x0) estimate, in the three parameterisations
//! diffusers' schedulers use. Each follows the class's own expression and operation order.

use candle_core::{Result, Tensor};

use super::scheduler_config::PredictionType;
use super::tensor_ops::{div, mul};

/// Sigma-parameterised samplers (Euler, Euler a, Heun, LMS), where `x = x0 + sigma * eps`:
/// epsilon `sample - sigma * out`; v `out * (-sigma / sqrt(sigma² + 1)) + sample / (sigma² + 1)`.
pub fn x0_from_sigma(prediction: PredictionType, model_output: &Tensor, sample: &Tensor, sigma: f32) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => sample - mul(model_output, sigma)?,
        PredictionType::VPrediction => {
            let sigma_sq_plus_one = sigma * sigma + 1.0;
            mul(model_output, -sigma / sigma_sq_plus_one.sqrt())? + div(sample, sigma_sq_plus_one)?
        }
        PredictionType::Sample => Ok(model_output.clone()),
    }
}

/// Variance-preserving samplers indexed by the cumulative alpha (DDIM, DDPM, LCM), where
/// `x = sqrt(a) * x0 + sqrt(1 - a) * eps`.
pub fn x0_from_alpha(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod: f32,
) -> Result<Tensor> {
    let beta_prod = 1.0 - alpha_prod;
    match prediction {
        PredictionType::Epsilon => div(&(sample - mul(model_output, beta_prod.sqrt())?)?, alpha_prod.sqrt()),
        PredictionType::VPrediction => mul(sample, alpha_prod.sqrt())? - mul(model_output, beta_prod.sqrt())?,
        PredictionType::Sample => Ok(model_output.clone()),
    }
}

/// The noise estimate that goes with [`x0_from_alpha`] (DDIM's `pred_epsilon`).
pub fn eps_from_alpha(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    x0: &Tensor,
    alpha_prod: f32,
) -> Result<Tensor> {
    let beta_prod = 1.0 - alpha_prod;
    match prediction {
        PredictionType::Epsilon => Ok(model_output.clone()),
        PredictionType::VPrediction => mul(model_output, alpha_prod.sqrt())? + mul(sample, beta_prod.sqrt())?,
        PredictionType::Sample => div(&(sample - mul(x0, alpha_prod.sqrt())?)?, beta_prod.sqrt()),
    }
}

/// The multistep solvers' data prediction (DPM-Solver++, UniPC), with `alpha_t = 1/sqrt(sigma²+1)`
/// and `sigma_t = sigma * alpha_t`: epsilon `(sample - sigma_t * out) / alpha_t`, v `alpha_t *
/// sample - sigma_t * out`.
pub fn x0_from_alpha_sigma(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_t: f32,
    sigma_t: f32,
) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => div(&(sample - mul(model_output, sigma_t)?)?, alpha_t),
        PredictionType::VPrediction => mul(sample, alpha_t)? - mul(model_output, sigma_t)?,
        PredictionType::Sample => Ok(model_output.clone()),
    }
}

/// The multistep solvers' noise prediction (UniPC with `predict_x0=False`).
pub fn eps_from_alpha_sigma(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_t: f32,
    sigma_t: f32,
) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => Ok(model_output.clone()),
        PredictionType::VPrediction => mul(model_output, alpha_t)? + mul(sample, sigma_t)?,
        PredictionType::Sample => div(&(sample - mul(model_output, alpha_t)?)?, sigma_t),
    }
}

/// `alpha_t, sigma_t` of a sigma (`_sigma_to_alpha_sigma_t`, float32).
pub fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha_t, sigma * alpha_t)
}

/// `log(alpha_t) - log(sigma_t)` (float32; +inf at sigma 0).
pub fn lambda(alpha_t: f32, sigma_t: f32) -> f32 {
    alpha_t.ln() - sigma_t.ln()
}

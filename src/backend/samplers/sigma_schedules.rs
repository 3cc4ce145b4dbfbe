//! The training noise schedule (betas, cumulative alphas, sigmas) and the inference timestep and
//! sigma grids, computed the way diffusers computes them: float32 where diffusers holds torch
//! float32 tensors, float64 where it works in numpy, with numpy's own rounding and fill rules.

use super::error::SamplerError;
use super::numpy_compat;
use super::scheduler_config::{BetaSchedule, TimestepSpacing};

/// What the training betas are derived from (a class's resolved config values).
#[derive(Debug, Clone)]
pub struct BetaParams<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
}

/// `betas` as diffusers builds them in every scheduler's `__init__` (float32).
pub fn training_betas(params: &BetaParams<'_>) -> Result<Vec<f32>, SamplerError> {
    let n = params.num_train_timesteps;
    if let Some(trained) = params.trained_betas {
        if trained.is_empty() {
            return Err(SamplerError::config("trained_betas", "must not be empty"));
        }
        return Ok(trained.iter().map(|&b| b as f32).collect());
    }
    let betas = match params.schedule {
        BetaSchedule::Linear => torch_linspace_f32(params.beta_start as f32, params.beta_end as f32, n),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(params.beta_start.sqrt() as f32, params.beta_end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => {
            betas_for_alpha_bar(n, |t| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2))
        }
        BetaSchedule::Exp => betas_for_alpha_bar(n, |t| (t * -12.0).exp()),
        BetaSchedule::Laplace => betas_for_alpha_bar(n, |t| {
            let lmb = -0.5 * (0.5 - t).signum_with_zero() * (1.0 - 2.0 * (0.5 - t).abs() + 1e-6).ln();
            let snr = lmb.exp();
            (snr / (1.0 + snr)).sqrt()
        }),
        BetaSchedule::Sigmoid => {
            let scale = (params.beta_end - params.beta_start) as f32;
            let offset = params.beta_start as f32;
            torch_linspace_f32(-6.0, 6.0, n).into_iter().map(|x| (1.0 / (1.0 + (-x).exp())) * scale + offset).collect()
        }
    };
    Ok(betas)
}

/// Python's `math.copysign(1, x)`: the sign of `x`, with +0 counting as positive.
trait SignWithZero {
    fn signum_with_zero(self) -> f64;
}

impl SignWithZero for f64 {
    fn signum_with_zero(self) -> f64 {
        1f64.copysign(self)
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: the first half counts up from
/// `start`, the second half counts down from `end`. torch's x86-64 build evaluates
/// `start + step * idx` as one fused multiply-add; doing the same reproduces the golden
/// sigmas bit for bit (separate rounding is 1 ulp off for some betas).
pub fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|idx| {
            if idx < halfway {
                step.mul_add(idx as f32, start)
            } else {
                (-step).mul_add((steps - idx - 1) as f32, end)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` (float64 loop, stored as float32).
fn betas_for_alpha_bar(n: usize, alpha_bar: impl Fn(f64) -> f64) -> Vec<f32> {
    const MAX_BETA: f64 = 0.999;
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(MAX_BETA) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1), in float32.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod(&alphas).into_iter().map(f32::sqrt).collect();
    let (Some(&first), Some(&last)) = (sqrt_bar.first(), sqrt_bar.last()) else {
        return Vec::new();
    };
    let scale = first / (first - last);
    for value in &mut sqrt_bar {
        *value -= last;
        *value *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut rescaled = Vec::with_capacity(bar.len());
    rescaled.push(1.0 - bar[0]);
    for pair in bar.windows(2) {
        rescaled.push(1.0 - pair[1] / pair[0]);
    }
    rescaled
}

/// `torch.cumprod` on a float32 CPU tensor: torch accumulates in float64 and stores float32.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `alphas_cumprod = cumprod(1 - betas)` (float32).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    cumprod(&alphas)
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32, ascending in training timestep.
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.log(sigmas)` of the float32 training sigmas (numpy keeps float32).
pub fn log_sigmas(training_sigmas: &[f32]) -> Vec<f32> {
    training_sigmas.iter().map(|s| s.ln()).collect()
}

/// The descending inference timesteps of the sigma-based discrete schedulers (Euler, Euler a,
/// Heun, LMS): float32 values (carried as f64). `trailing` keeps exactly `steps` entries (numpy's
/// `arange` yields one extra, negative, timestep for a few step counts such as 61).
pub fn float_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let to_f32 = |v: f64| v as f32 as f64;
    match spacing {
        TimestepSpacing::Linspace => {
            numpy_compat::linspace(0.0, (num_train_timesteps - 1) as f64, steps).into_iter().rev().map(to_f32).collect()
        }
        TimestepSpacing::Leading => leading_grid(num_train_timesteps / steps, steps, steps_offset),
        TimestepSpacing::Trailing => trailing_grid(num_train_timesteps as f64, num_train_timesteps, steps),
    }
}

/// The descending integer timesteps of DDIM and DDPM.
pub fn integer_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => numpy_compat::linspace(0.0, (num_train_timesteps - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(numpy_compat::round)
            .collect(),
        TimestepSpacing::Leading => leading_grid(num_train_timesteps / steps, steps, steps_offset),
        TimestepSpacing::Trailing => trailing_grid(num_train_timesteps as f64, num_train_timesteps, steps),
    }
}

/// The descending integer timesteps of the multistep solvers (DPM-Solver++, UniPC): a grid of
/// `steps + 1` points without its last one. `last_timestep` is `num_train_timesteps` unless DPM's
/// `lambda_min_clipped` cuts the top off.
pub fn multistep_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut grid: Vec<f64> = numpy_compat::linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
                .into_iter()
                .map(numpy_compat::round)
                .collect();
            grid.remove(0);
            grid.reverse();
            // `.astype(np.int64)` after `round()`: already integral.
            grid
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            let mut grid = leading_grid(ratio, steps + 1, steps_offset);
            grid.pop();
            grid
        }
        TimestepSpacing::Trailing => trailing_grid(last_timestep as f64, num_train_timesteps, steps),
    }
}

/// `(np.arange(0, count) * ratio).round()[::-1] + steps_offset`.
fn leading_grid(ratio: usize, count: usize, steps_offset: usize) -> Vec<f64> {
    (0..count).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
}

/// `np.arange(start, 0, -num_train_timesteps / steps).round() - 1`, cut to `steps` entries.
fn trailing_grid(start: f64, num_train_timesteps: usize, steps: usize) -> Vec<f64> {
    let ratio = num_train_timesteps as f64 / steps as f64;
    numpy_compat::arange(start, 0.0, -ratio).into_iter().take(steps).map(|t| numpy_compat::round(t) - 1.0).collect()
}

/// `np.interp(timesteps, arange(len(sigmas)), sigmas)` over the float32 training sigmas.
pub fn interpolate_sigmas(timesteps: &[f64], training_sigmas: &[f32]) -> Vec<f64> {
    let table: Vec<f64> = training_sigmas.iter().map(|&s| s as f64).collect();
    timesteps.iter().map(|&t| numpy_compat::interp_on_index_grid(t, &table)).collect()
}

/// Karras et al. (2022) sigmas: `(max^(1/7) + ramp * (min^(1/7) - max^(1/7)))^7`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    numpy_compat::linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// Exponential sigmas: evenly spaced in log-sigma from `sigma_max` down to `sigma_min`.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    numpy_compat::linspace(sigma_max.ln(), sigma_min.ln(), steps).into_iter().map(f64::exp).collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose sigma is `sigma`, by linear
/// interpolation in log-sigma between the two neighbouring training sigmas. As in numpy, the
/// denominator `low - high` is a float32 difference.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    let low_idx = log_sigmas.iter().rposition(|&ls| log_sigma - ls as f64 >= 0.0).unwrap_or(0).min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// How the inference sigmas of a sigma-based scheduler are re-spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSpacing {
    /// The sigmas of the spaced timesteps themselves.
    Timesteps,
    Karras,
    Exponential,
}

/// Re-space `steps` sigmas between `sigma_min` and `sigma_max` and map each back to a fractional
/// timestep; `None` for [`SigmaSpacing::Timesteps`] (the caller keeps its own grid).
pub fn respaced_sigmas(
    spacing: SigmaSpacing,
    sigma_min: f64,
    sigma_max: f64,
    steps: usize,
    log_sigmas: &[f32],
) -> Option<(Vec<f64>, Vec<f64>)> {
    let sigmas = match spacing {
        SigmaSpacing::Timesteps => return None,
        SigmaSpacing::Karras => karras_sigmas(sigma_min, sigma_max, steps),
        SigmaSpacing::Exponential => exponential_sigmas(sigma_min, sigma_max, steps),
    };
    let timesteps = sigmas.iter().map(|&s| sigma_to_t(s, log_sigmas)).collect();
    Some((sigmas, timesteps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd_alphas_cumprod() -> Vec<f32> {
        let params = BetaParams {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
        };
        alphas_cumprod(&training_betas(&params).expect("betas"))
    }

    #[test]
    fn sd_training_sigmas_span_the_known_range() {
        let sigmas = training_sigmas(&sd_alphas_cumprod());
        assert!((sigmas[999] - 14.614647).abs() < 2e-6, "{}", sigmas[999]);
        assert!((sigmas[0] - 0.029167533).abs() < 1e-9, "{}", sigmas[0]);
    }

    #[test]
    fn timestep_grids_match_diffusers() {
        assert_eq!(
            integer_timesteps(TimestepSpacing::Leading, 1000, 6, 1),
            vec![831.0, 665.0, 499.0, 333.0, 167.0, 1.0]
        );
        assert_eq!(
            integer_timesteps(TimestepSpacing::Trailing, 1000, 6, 1),
            vec![999.0, 832.0, 666.0, 499.0, 332.0, 166.0]
        );
        assert_eq!(integer_timesteps(TimestepSpacing::Linspace, 1000, 4, 0), vec![999.0, 666.0, 333.0, 0.0]);
        assert_eq!(
            multistep_timesteps(TimestepSpacing::Linspace, 1000, 1000, 6, 1),
            vec![999.0, 832.0, 666.0, 500.0, 333.0, 166.0]
        );
        assert_eq!(
            multistep_timesteps(TimestepSpacing::Leading, 1000, 1000, 6, 1),
            vec![853.0, 711.0, 569.0, 427.0, 285.0, 143.0]
        );
        assert_eq!(
            multistep_timesteps(TimestepSpacing::Trailing, 1000, 1000, 6, 1),
            vec![999.0, 832.0, 666.0, 499.0, 332.0, 166.0]
        );
        let linspace = float_timesteps(TimestepSpacing::Linspace, 1000, 6, 1);
        assert_eq!(linspace[1], 799.2f32 as f64);
        // 61 trailing steps: numpy's arange gives 62 points; the schedule keeps 61.
        assert_eq!(float_timesteps(TimestepSpacing::Trailing, 1000, 61, 0).len(), 61);
    }

    #[test]
    fn sigma_to_t_inverts_training_sigmas() {
        let sigmas = training_sigmas(&sd_alphas_cumprod());
        let logs = log_sigmas(&sigmas);
        assert!((sigma_to_t(sigmas[999] as f64, &logs) - 999.0).abs() < 1e-6);
        assert!((sigma_to_t(sigmas[0] as f64, &logs) - 0.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(0.0, &logs), 0.0);
        let mid = ((sigmas[400] as f64).ln() + (sigmas[401] as f64).ln()) / 2.0;
        assert!((sigma_to_t(mid.exp(), &logs) - 400.5).abs() < 1e-3);
    }

    #[test]
    fn karras_and_exponential_end_at_the_bounds() {
        let k = karras_sigmas(0.1, 10.0, 5);
        assert!((k[0] - 10.0).abs() < 1e-12 && (k[4] - 0.1).abs() < 1e-12);
        let e = exponential_sigmas(0.1, 10.0, 5);
        assert!((e[2] - 1.0).abs() < 1e-12, "{}", e[2]);
    }
}

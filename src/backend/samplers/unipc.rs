//! "UniPC": diffusers' `UniPCMultistepScheduler` (Zhao et al. 2023): a multistep predictor
//! (UniP) followed, at the next step, by a corrector (UniC) that reuses the new model output.
//! Any `solver_order`, `bh1`/`bh2`, data (`predict_x0`) or noise prediction.

use std::collections::VecDeque;

use candle_core::{Result, Tensor};

use super::discrete_sigmas;
use super::error::SamplerError;
use super::prediction::{alpha_sigma, eps_from_alpha_sigma, lambda, x0_from_alpha_sigma};
use super::scheduler_config::{BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigma_schedules::{self, SigmaSpacing};
use super::tensor_ops::{div, mul, to_f32};
use super::training_schedule::{self, ClassDefaults, TrainingSchedule, ZeroSnr, COMMON_BETA_SCHEDULES};
use super::x0_clipping::X0Clipping;
use super::{sample_sigma, Sampler};
use crate::backend::rng::NoiseSource;

pub(super) const DEFAULTS: ClassDefaults = ClassDefaults {
    sampler: "UniPCMultistepScheduler",
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: BetaSchedule::Linear,
    beta_schedules: COMMON_BETA_SCHEDULES,
    zero_snr: ZeroSnr::RescaleKeepSigmaFinite,
    timestep_spacing: TimestepSpacing::Linspace,
};

/// `B(h)` of the UniPC paper: `bh1` uses `h`, `bh2` uses `expm1(h)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BhVariant {
    Bh1,
    Bh2,
}

pub struct UniPc {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    sigmas_f64: Vec<f64>,
    prediction: PredictionType,
    clipping: X0Clipping,
    solver_order: usize,
    variant: BhVariant,
    predict_x0: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// Converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: VecDeque<Tensor>,
    lower_order_nums: usize,
    /// The (corrected) sample the previous predictor started from, and that predictor's order.
    last_sample: Option<Tensor>,
    this_order: usize,
}

/// The coefficient system shared by predictor and corrector.
struct Coefficients {
    /// `rk` for each history entry, then 1.
    rks: Vec<f32>,
    /// `b` of the linear system.
    b: Vec<f32>,
    h_phi_1: f32,
    b_h: f32,
}

impl UniPc {
    pub fn new(config: &SchedulerConfig, steps: usize) -> std::result::Result<Self, SamplerError> {
        for (flag, name) in
            [(config.use_flow_sigmas, "use_flow_sigmas"), (config.use_dynamic_shifting, "use_dynamic_shifting")]
        {
            if flag.unwrap_or(false) {
                return Err(SamplerError::unsupported(DEFAULTS.sampler, name));
            }
        }
        let variant = match config.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => BhVariant::Bh1,
            // diffusers maps the DPM-Solver names onto bh2.
            "bh2" | "midpoint" | "heun" | "logrho" => BhVariant::Bh2,
            other => return Err(SamplerError::config("solver_type", format!("unsupported value {other:?}"))),
        };
        let solver_order = config.solver_order.unwrap_or(2);
        if solver_order == 0 {
            return Err(SamplerError::config("solver_order", "must be at least 1"));
        }
        let training = TrainingSchedule::from_config(config, &DEFAULTS)?;
        training_schedule::check_steps(steps, &training)?;
        let sigma_spacing = discrete_sigmas::sigma_spacing_from_config(config, DEFAULTS.sampler)?;
        let (timesteps, sigmas) = schedule(&training, config, steps, sigma_spacing);
        Ok(UniPc {
            sigmas_f64: sigmas.iter().map(|&s| s as f64).collect(),
            timesteps,
            sigmas,
            prediction: training_schedule::prediction_type(config),
            clipping: X0Clipping::thresholding_only(config),
            solver_order,
            variant,
            predict_x0: config.predict_x0.unwrap_or(true),
            lower_order_final: config.lower_order_final.unwrap_or(true),
            disable_corrector: config.disable_corrector.clone().unwrap_or_default(),
            model_outputs: VecDeque::with_capacity(solver_order),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 1,
        })
    }

    fn lambda_at(&self, index: usize) -> Result<f32> {
        let (alpha, sigma) = alpha_sigma(sample_sigma(&self.sigmas, index)?);
        Ok(lambda(alpha, sigma))
    }

    /// The history entry `back` steps before the newest (0 = newest).
    fn history(&self, back: usize) -> Result<&Tensor> {
        self.model_outputs
            .len()
            .checked_sub(back + 1)
            .and_then(|i| self.model_outputs.get(i))
            .ok_or_else(|| candle_core::Error::Msg("UniPC history too short".into()))
    }

    /// `rks`, `b`, `h_phi_1` and `B(h)` for an update of `order` from lambda_s0 to lambda_t;
    /// `history_index(k)` is the sigma index of the k-th older history entry.
    fn coefficients(
        &self,
        order: usize,
        h: f32,
        lambda_s0: f32,
        history_index: impl Fn(usize) -> Option<usize>,
    ) -> Result<Coefficients> {
        let mut rks = Vec::with_capacity(order);
        for k in 1..order {
            let index =
                history_index(k).ok_or_else(|| candle_core::Error::Msg("UniPC history before index 0".into()))?;
            rks.push((self.lambda_at(index)? - lambda_s0) / h);
        }
        rks.push(1.0);
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = expm1(hh);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1f32;
        let b_h = match self.variant {
            BhVariant::Bh1 => hh,
            BhVariant::Bh2 => expm1(hh),
        };
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        Ok(Coefficients { rks, b, h_phi_1, b_h })
    }

    /// `x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0` (or the noise-prediction form),
    /// returned with the weight of the correction terms (`alpha_t * B(h)` or `sigma_t * B(h)`).
    fn base_update(
        &self,
        x: &Tensor,
        m0: &Tensor,
        sigma_t_index: usize,
        sigma_s0_index: usize,
        c: &Coefficients,
    ) -> Result<(Tensor, f32)> {
        let (alpha_t, sigma_t) = alpha_sigma(sample_sigma(&self.sigmas, sigma_t_index)?);
        let (alpha_s0, sigma_s0) = alpha_sigma(sample_sigma(&self.sigmas, sigma_s0_index)?);
        if self.predict_x0 {
            let base = (mul(x, sigma_t / sigma_s0)? - mul(m0, alpha_t * c.h_phi_1)?)?;
            Ok((base, alpha_t * c.b_h))
        } else {
            let base = (mul(x, alpha_t / alpha_s0)? - mul(m0, sigma_t * c.h_phi_1)?)?;
            Ok((base, sigma_t * c.b_h))
        }
    }

    /// UniP: from the sample at `index` to the sigma of `index + 1`, using the newest `order`
    /// history entries (the newest is this step's converted output).
    fn predictor(&self, x: &Tensor, index: usize, order: usize) -> Result<Tensor> {
        let lambda_s0 = self.lambda_at(index)?;
        let h = self.lambda_at(index + 1)? - lambda_s0;
        let c = self.coefficients(order, h, lambda_s0, |k| index.checked_sub(k))?;
        let m0 = self.history(0)?;
        let mut d1s = Vec::with_capacity(order.saturating_sub(1));
        for k in 1..order {
            d1s.push(div(&(self.history(k)? - m0)?, c.rks[k - 1])?);
        }
        let (base, weight) = self.base_update(x, m0, index + 1, index, &c)?;
        if d1s.is_empty() {
            return Ok(base);
        }
        let rhos = if order == 2 { vec![0.5] } else { solve(&power_matrix(&c.rks[..order - 1]), &c.b[..order - 1])? };
        let pred_res = weighted_sum(&rhos, &d1s)?;
        base - mul(&pred_res, weight)?
    }

    /// UniC: correct the sample at `index` (reached by the previous predictor from
    /// `last_sample`) with this step's converted output `model_t`.
    fn corrector(&self, model_t: &Tensor, last_sample: &Tensor, index: usize, order: usize) -> Result<Tensor> {
        let previous =
            index.checked_sub(1).ok_or_else(|| candle_core::Error::Msg("UniPC corrector at index 0".into()))?;
        let lambda_s0 = self.lambda_at(previous)?;
        let h = self.lambda_at(index)? - lambda_s0;
        let c = self.coefficients(order, h, lambda_s0, |k| index.checked_sub(k + 1))?;
        let m0 = self.history(0)?;
        let mut d1s = Vec::with_capacity(order.saturating_sub(1));
        for k in 1..order {
            d1s.push(div(&(self.history(k)? - m0)?, c.rks[k - 1])?);
        }
        let rhos = if order == 1 { vec![0.5] } else { solve(&power_matrix(&c.rks), &c.b)? };
        let (base, weight) = self.base_update(last_sample, m0, index, previous, &c)?;
        let d1_t = (model_t - m0)?;
        let last_rho = rhos.last().copied().unwrap_or(0.5);
        let correction = if d1s.is_empty() {
            mul(&d1_t, last_rho)?
        } else {
            (weighted_sum(&rhos[..rhos.len() - 1], &d1s)? + mul(&d1_t, last_rho)?)?
        };
        base - mul(&correction, weight)?
    }
}

/// `set_timesteps`: integer timesteps and float32 sigmas (one more than the timesteps).
fn schedule(
    training: &TrainingSchedule,
    config: &SchedulerConfig,
    steps: usize,
    sigma_spacing: SigmaSpacing,
) -> (Vec<f64>, Vec<f32>) {
    let n = training.num_train_timesteps;
    let mut timesteps = sigma_schedules::multistep_timesteps(
        training_schedule::spacing(config, &DEFAULTS),
        n,
        n,
        steps,
        training_schedule::steps_offset(config),
    );
    let training_sigmas = training.sigmas();
    let log_sigmas = sigma_schedules::log_sigmas(&training_sigmas);
    let sigma_min = config.sigma_min.unwrap_or(training_sigmas[0] as f64);
    let sigma_max = config.sigma_max.unwrap_or(training_sigmas[n - 1] as f64);
    let final_sigmas_type = config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
    let sigma_min_final = final_sigmas_type == FinalSigmasType::SigmaMin;
    let sigmas = match sigma_schedules::respaced_sigmas(sigma_spacing, sigma_min, sigma_max, steps, &log_sigmas) {
        Some((mut sigmas, respaced)) => {
            // Karras timesteps are rounded, exponential ones truncated by the int64 cast.
            let round = sigma_spacing == SigmaSpacing::Karras;
            timesteps = respaced.into_iter().map(|t| if round { t.round_ties_even() } else { t.trunc() }).collect();
            // Here `sigma_min` means the last re-spaced sigma, not the training minimum.
            let last = sigmas.last().copied().unwrap_or(0.0);
            sigmas.push(if sigma_min_final { last } else { 0.0 });
            sigmas
        }
        None => {
            let mut sigmas = sigma_schedules::interpolate_sigmas(&timesteps, &training_sigmas);
            sigmas.push(if sigma_min_final { training_sigmas[0] as f64 } else { 0.0 });
            sigmas
        }
    };
    (timesteps, sigmas.into_iter().map(|s| s as f32).collect())
}

/// `torch.expm1` of a float32 scalar, correctly rounded (libm's float32 `expm1f` is 1 ulp off
/// torch's result on the golden run; rounding the float64 value matches it).
fn expm1(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// `R[i][j] = rks[j]^i` (torch.pow of the float32 rks).
fn power_matrix(rks: &[f32]) -> Vec<Vec<f32>> {
    (0..rks.len()).map(|i| rks.iter().map(|r| r.powi(i as i32)).collect()).collect()
}

/// `torch.linalg.solve(R, b)` for float32 `R`: LAPACK's `sgesv` (LU with partial pivoting,
/// the pivot column scaled by the pivot's reciprocal, then two triangular solves), in float32.
fn solve(matrix: &[Vec<f32>], rhs: &[f32]) -> Result<Vec<f32>> {
    let n = rhs.len();
    let mut a: Vec<Vec<f32>> = matrix.to_vec();
    let mut b: Vec<f32> = rhs.to_vec();
    for col in 0..n {
        let mut pivot = col;
        for row in col + 1..n {
            if a[row][col].abs() > a[pivot][col].abs() {
                pivot = row;
            }
        }
        if a[pivot][col] == 0.0 {
            return Err(candle_core::Error::Msg("UniPC: singular coefficient system".into()));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let reciprocal = 1.0 / a[col][col];
        for row in col + 1..n {
            a[row][col] *= reciprocal;
            for k in col + 1..n {
                a[row][k] -= a[row][col] * a[col][k];
            }
        }
    }
    // L y = P b (unit lower), then U x = y.
    for row in 0..n {
        for k in 0..row {
            b[row] -= a[row][k] * b[k];
        }
    }
    for row in (0..n).rev() {
        for k in row + 1..n {
            b[row] -= a[row][k] * b[k];
        }
        b[row] /= a[row][row];
    }
    Ok(b)
}

/// `einsum("k,bkc...->bc...", weights, stacked)`: `Σ weights[k] * tensors[k]`.
fn weighted_sum(weights: &[f32], tensors: &[Tensor]) -> Result<Tensor> {
    let mut terms = weights.iter().zip(tensors).map(|(&w, t)| mul(t, w));
    let first = terms.next().ok_or_else(|| candle_core::Error::Msg("UniPC: empty weighted sum".into()))??;
    terms.try_fold(first, |acc, term| acc + term?)
}

impl Sampler for UniPc {
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
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let model_output = to_f32(model_output)?;
        let mut x = to_f32(sample)?;
        let (alpha_t, sigma_t) = alpha_sigma(sample_sigma(&self.sigmas, index)?);
        let converted = if self.predict_x0 {
            self.clipping.apply(&x0_from_alpha_sigma(self.prediction, &model_output, &x, alpha_t, sigma_t)?)?
        } else {
            eps_from_alpha_sigma(self.prediction, &model_output, &x, alpha_t, sigma_t)?
        };
        let use_corrector = index > 0 && !self.disable_corrector.contains(&(index - 1)) && self.last_sample.is_some();
        if use_corrector {
            if let Some(last_sample) = &self.last_sample {
                x = self.corrector(&converted, last_sample, index, self.this_order)?;
            }
        }
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.pop_front();
        }
        self.model_outputs.push_back(converted);
        let remaining = self.timesteps.len().saturating_sub(index);
        let order = if self.lower_order_final { self.solver_order.min(remaining) } else { self.solver_order };
        self.this_order = order.min(self.lower_order_nums + 1).max(1);
        let prev = self.predictor(&x, index, self.this_order)?;
        self.last_sample = Some(x);
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        prev.to_dtype(sample.dtype())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, index: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sample_sigma(&self.sigmas, index)?);
        mul(original, alpha_t)? + mul(noise, sigma_t)?
    }
}

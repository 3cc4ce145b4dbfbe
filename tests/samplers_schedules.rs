//! Schedule options (Karras, Exponential, SGM Uniform), step-count validation, and the
//! v_prediction / sample parameterisations of every sampler.
//!
//! Reference values: where a diffusers golden holds the same numbers they are taken from it
//! (Karras and trailing sigmas of the SD 1.5 schedule appear in the DPM++ goldens); the others
//! come from a numpy transcription of diffusers' `set_timesteps` (diffusers 0.42, numpy 2.4),
//! whose float32 training sigmas may differ from torch's by an ulp, hence the tolerances.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use sd_worker_rbee::backend::request::{SamplerKind, ScheduleKind};
use sd_worker_rbee::backend::rng::NoiseSource;
use sd_worker_rbee::backend::samplers::scheduler_config::{BetaSchedule, PredictionType};
use sd_worker_rbee::backend::samplers::sigma_schedules::{alphas_cumprod, training_betas, BetaParams};
use sd_worker_rbee::backend::samplers::{build_sampler, Sampler, SamplerError, SchedulerConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn config(model: &str) -> SchedulerConfig {
    let text =
        std::fs::read_to_string(format!("{FIXTURES}/{model}/scheduler/scheduler_config.json")).expect("config file");
    SchedulerConfig::from_json_str(&text).expect("config parses")
}

fn build(kind: SamplerKind, schedule: ScheduleKind, model: &str, steps: usize) -> Box<dyn Sampler> {
    build_sampler(kind, schedule, &config(model), steps).expect("sampler builds")
}

fn golden_values(case: &str, name: &str) -> Vec<f64> {
    let tensors =
        candle_core::safetensors::load(format!("{FIXTURES}/golden/{case}.safetensors"), &Device::Cpu).expect("golden");
    tensors[name].to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
}

fn assert_close(actual: &[f64], expected: &[f64], relative: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: {actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= relative * e.abs().max(1.0), "{what}: {actual:?} vs {expected:?}");
    }
}

#[test]
fn karras_euler_uses_the_same_sigmas_as_the_karras_dpm_golden() {
    // On SD 1.5's linspace grid, Euler's Karras bounds (the interpolated ends) are the training
    // extremes, which DPM-Solver uses too, so the sigmas must equal the DPM++ 2M Karras golden's.
    let euler = build(SamplerKind::Euler, ScheduleKind::Karras, "tiny-sd15", 6);
    let golden = golden_values("tiny-sd15-dpmpp_2m_karras", "scheduler.sigmas");
    assert_eq!(euler.sigmas().expect("sigmas"), golden.as_slice());
    // Fractional timesteps from `_sigma_to_t` (numpy transcription).
    let expected =
        [999.0, 837.120_666_503_906_2, 593.502_197_265_625, 248.756_454_467_773_44, 29.806_053_161_621_094, 0.0];
    assert_close(euler.timesteps(), &expected, 1e-6, "Euler Karras timesteps");
    assert_eq!(euler.init_noise_sigma(), golden[0]);
    // Heun repeats them; LMS (bounds from its own schedule) agrees on this grid.
    let heun = build(SamplerKind::Heun, ScheduleKind::Karras, "tiny-sd15", 6);
    assert_eq!(heun.timesteps().len(), 11);
    assert_eq!(heun.timesteps()[1], euler.timesteps()[1]);
    assert_eq!(heun.timesteps()[2], euler.timesteps()[1]);
    let lms = build(SamplerKind::Lms, ScheduleKind::Karras, "tiny-sd15", 6);
    assert_eq!(lms.sigmas(), euler.sigmas());
    // UniPC rounds the Karras timesteps like DPM-Solver.
    let unipc = build(SamplerKind::UniPc, ScheduleKind::Karras, "tiny-sd15", 6);
    assert_eq!(unipc.timesteps(), golden_values("tiny-sd15-dpmpp_2m_karras", "scheduler.timesteps").as_slice());
}

#[test]
fn karras_on_a_leading_grid_takes_its_bounds_from_the_spaced_sigmas() {
    // SDXL's config: leading spacing with steps_offset 1, so sigma_max is the sigma of t=831.
    let euler = build(SamplerKind::Euler, ScheduleKind::Karras, "tiny-sdxl", 6);
    let expected_sigmas = [
        5.906_451_702_117_92,
        2.790_786_266_326_904_3,
        1.205_102_205_276_489_3,
        0.464_010_834_693_908_7,
        0.153_624_400_496_482_85,
        0.041_314_478_963_613_51,
        0.0,
    ];
    assert_close(euler.sigmas().expect("sigmas"), &expected_sigmas, 3e-7, "Euler Karras leading sigmas");
    let expected_timesteps = [
        831.0,
        654.294_616_699_218_8,
        410.485_595_703_125,
        153.512_161_254_882_8,
        24.649_326_324_462_89,
        1.000_000_119_209_289_6,
    ];
    assert_close(euler.timesteps(), &expected_timesteps, 1e-5, "Euler Karras leading timesteps");
    // `leading` grids start from sqrt(sigma_max² + 1).
    let sigma_max = expected_sigmas[0];
    assert!((euler.init_noise_sigma() - (sigma_max * sigma_max + 1.0).sqrt()).abs() < 1e-5);
}

#[test]
fn exponential_sigmas_are_log_linear_between_the_bounds() {
    let euler = build(SamplerKind::Euler, ScheduleKind::Exponential, "tiny-sd15", 6);
    let expected_sigmas = [
        14.614_647,
        4.215_126_991_271_973,
        1.215_718_150_138_855,
        0.350_634_932_518_005_37,
        0.101_129_390_299_320_22,
        0.029_167_532_920_837_402,
        0.0,
    ];
    let sigmas = euler.sigmas().expect("sigmas");
    assert_close(sigmas, &expected_sigmas, 3e-7, "Euler exponential sigmas");
    // Equal ratios between consecutive sigmas.
    let ratio = sigmas[1] / sigmas[0];
    for pair in sigmas[..6].windows(2) {
        assert!((pair[1] / pair[0] - ratio).abs() < 1e-6);
    }
    let expected_timesteps =
        [999.0, 756.512_084_960_937_5, 413.163_421_630_859_4, 102.974_288_940_429_69, 10.631_169_319_152_832, 0.0];
    assert_close(euler.timesteps(), &expected_timesteps, 1e-5, "Euler exponential timesteps");
    // DPM-Solver truncates (int64 cast) instead of rounding. Its first timestep sits on the
    // exp(log(sigma_max)) round trip: 999 or 998.99.. -> 998 depending on the last ulp.
    let dpm = build(SamplerKind::DpmPp2m, ScheduleKind::Exponential, "tiny-sd15", 6);
    assert_eq!(&dpm.timesteps()[1..], &[756.0, 413.0, 102.0, 10.0, 0.0]);
    assert!(dpm.timesteps()[0] == 998.0 || dpm.timesteps()[0] == 999.0);
    assert_close(dpm.sigmas().expect("sigmas"), &expected_sigmas, 3e-7, "DPM exponential sigmas");
}

#[test]
fn sgm_uniform_is_trailing_spacing() {
    let trailing = [999.0, 832.0, 666.0, 499.0, 332.0, 166.0];
    let euler = build(SamplerKind::Euler, ScheduleKind::SgmUniform, "tiny-sd15", 6);
    assert_eq!(euler.timesteps(), &trailing);
    // Integer timesteps land on training sigmas: shared ones equal the DPM++ golden's.
    let dpm_golden = golden_values("tiny-sd15-dpmpp_2m", "scheduler.sigmas");
    let sigmas = euler.sigmas().expect("sigmas");
    for i in [0, 1, 2, 5, 6] {
        assert_eq!(sigmas[i], dpm_golden[i], "sigma {i}");
    }
    // Trailing grids start from sigma_max itself.
    assert_eq!(euler.init_noise_sigma(), dpm_golden[0]);
    for kind in [
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::DpmPp2m,
        SamplerKind::UniPc,
        SamplerKind::EulerAncestral,
        SamplerKind::Lms,
    ] {
        assert_eq!(build(kind, ScheduleKind::SgmUniform, "tiny-sd15", 6).timesteps(), &trailing, "{kind:?}");
    }
    let heun = build(SamplerKind::Heun, ScheduleKind::SgmUniform, "tiny-sd15", 6);
    assert_eq!(heun.timesteps(), &[999.0, 832.0, 832.0, 666.0, 666.0, 499.0, 499.0, 332.0, 332.0, 166.0, 166.0]);
    // LCM's timesteps come from its distillation schedule: no spacing to change.
    assert_eq!(
        build(SamplerKind::Lcm, ScheduleKind::SgmUniform, "tiny-sd15", 4).timesteps(),
        &[999.0, 759.0, 499.0, 259.0]
    );
}

#[test]
fn samplers_without_sigma_options_ignore_karras_and_exponential() {
    for kind in [SamplerKind::Ddim, SamplerKind::Ddpm, SamplerKind::Lcm] {
        let automatic = build(kind, ScheduleKind::Automatic, "tiny-sd15", 4);
        for schedule in [ScheduleKind::Karras, ScheduleKind::Exponential] {
            let other = build(kind, schedule, "tiny-sd15", 4);
            assert_eq!(other.timesteps(), automatic.timesteps(), "{kind:?} {schedule:?}");
            assert!(other.sigmas().is_none());
        }
    }
}

#[test]
fn step_counts_are_validated_without_panicking() {
    for (kind, _, _) in SamplerKind::ALL {
        let zero = build_sampler(*kind, ScheduleKind::Automatic, &config("tiny-sd15"), 0);
        assert!(matches!(zero, Err(SamplerError::Steps { steps: 0, .. })), "{kind:?}");
        assert!(build_sampler(*kind, ScheduleKind::Automatic, &config("tiny-sd15"), 1001).is_err(), "{kind:?}");
        let one = build_sampler(*kind, ScheduleKind::Karras, &config("tiny-sd15"), 1).expect("1 step builds");
        assert_eq!(one.timesteps().len(), 1, "{kind:?}");
    }
    // LCM is limited by its distillation schedule (original_inference_steps = 50).
    assert!(build_sampler(SamplerKind::Lcm, ScheduleKind::Automatic, &config("tiny-sd15"), 51).is_err());
    assert!(build_sampler(SamplerKind::Lcm, ScheduleKind::Automatic, &config("tiny-sd15"), 50).is_ok());
}

#[test]
fn stepping_past_the_schedule_is_an_error() {
    let mut sampler = build(SamplerKind::Euler, ScheduleKind::Automatic, "tiny-sd15", 2);
    let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).expect("tensor");
    let mut noise = CyclingNoise { draws: vec![x.clone()], taken: 0 };
    assert!(sampler.step(&x, 2, &x, &mut noise).is_err());
    assert!(sampler.scale_model_input(&x, 5).is_err());
}

/// Replays a fixed list of noise tensors, cycling.
struct CyclingNoise {
    draws: Vec<Tensor>,
    taken: usize,
}

impl NoiseSource for CyclingNoise {
    fn randn_like(&mut self, _like: &Tensor) -> candle_core::Result<Tensor> {
        let draw = self.draws[self.taken % self.draws.len()].clone();
        self.taken += 1;
        Ok(draw)
    }
}

/// How a sampler's latents relate to (x0, eps) at loop index `index`:
/// `latents * scale = alpha * x0 + sigma * eps` (variance-preserving alpha, sigma).
fn parameterisation(kind: SamplerKind, sampler: &dyn Sampler, index: usize, alphas_cumprod: &[f32]) -> (f64, f64, f64) {
    match kind {
        SamplerKind::Ddim | SamplerKind::Ddpm | SamplerKind::Lcm => {
            let a = alphas_cumprod[sampler.timesteps()[index] as usize] as f64;
            (a.sqrt(), (1.0 - a).sqrt(), 1.0)
        }
        _ => {
            let sigma = sampler.sigmas().expect("sigmas")[index];
            let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            // Euler-type latents are alpha-free (x = x0 + sigma * eps); the multistep solvers'
            // are variance preserving.
            let scale = if matches!(kind, SamplerKind::DpmPp2m | SamplerKind::DpmPp2mSde | SamplerKind::UniPc) {
                1.0
            } else {
                alpha
            };
            (alpha, sigma * alpha, scale)
        }
    }
}

/// Run the whole loop with an oracle model that knows the clean latents `x0` and answers in
/// the given parameterisation; returns the final latents.
fn run_with_oracle(
    kind: SamplerKind,
    prediction: PredictionType,
    x0: &Tensor,
    init: &Tensor,
    draws: &[Tensor],
) -> Result<Tensor> {
    let mut cfg = config("tiny-sd15");
    cfg.prediction_type = Some(prediction);
    let steps = if kind == SamplerKind::Lcm { 4 } else { 6 };
    let mut sampler = build_sampler(kind, ScheduleKind::Automatic, &cfg, steps)?;
    let betas = training_betas(&BetaParams {
        num_train_timesteps: 1000,
        beta_start: 0.00085,
        beta_end: 0.012,
        schedule: BetaSchedule::ScaledLinear,
        trained_betas: None,
    })?;
    let alphas_cumprod = alphas_cumprod(&betas);
    let mut noise = CyclingNoise { draws: draws.to_vec(), taken: 0 };
    let mut latents = (init * sampler.init_noise_sigma())?;
    for index in 0..sampler.timesteps().len() {
        let (alpha, sigma, scale) = parameterisation(kind, sampler.as_ref(), index, &alphas_cumprod);
        let eps = (((&latents * scale)? - (x0 * alpha)?)? / sigma)?;
        let output = match prediction {
            PredictionType::Epsilon => eps,
            PredictionType::VPrediction => ((&eps * alpha)? - (x0 * sigma)?)?,
            PredictionType::Sample => x0.clone(),
        };
        latents = sampler.step(&output, index, &latents, &mut noise)?;
    }
    Ok(latents)
}

#[test]
fn v_prediction_and_sample_prediction_decode_to_the_same_trajectory() -> Result<()> {
    let golden =
        candle_core::safetensors::load(format!("{FIXTURES}/golden/tiny-sd15-euler_a.safetensors"), &Device::Cpu)?;
    let init = golden["rng.draw00"].clone();
    let x0 = (golden["latents.final"].clone() * 0.5)?;
    let draws: Vec<Tensor> = (1..=6).map(|i| golden[&format!("rng.draw{i:02}")].clone()).collect();
    for (kind, _, _) in SamplerKind::ALL {
        let eps_run = run_with_oracle(*kind, PredictionType::Epsilon, &x0, &init, &draws)?;
        let scale = eps_run.abs()?.max_all()?.to_scalar::<f32>()?;
        for prediction in [PredictionType::VPrediction, PredictionType::Sample] {
            let other = run_with_oracle(*kind, prediction, &x0, &init, &draws)?;
            let diff = (&other - &eps_run)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff <= 1e-5 * scale, "{kind:?} {prediction:?}: max diff {diff:e} (scale {scale})");
        }
        // An oracle with an exact x0 lands on it: every last step removes all noise, except
        // DDIM's with set_alpha_to_one=false, which stops at the noise level of alphas_cumprod[0].
        if *kind == SamplerKind::Ddim {
            continue;
        }
        let to_x0 = (&eps_run - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(to_x0 <= 1e-3 * scale, "{kind:?} ends {to_x0:e} away from x0");
    }
    Ok(())
}

#[test]
fn v_prediction_is_read_from_the_config_file() {
    let text = r#"{"_class_name": "DDIMScheduler", "prediction_type": "v_prediction", "timestep_spacing": "trailing",
                   "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false,
                   "set_alpha_to_one": false, "steps_offset": 1, "rescale_betas_zero_snr": true}"#;
    let config = SchedulerConfig::from_json_str(text).expect("parses");
    assert_eq!(config.prediction_type, Some(PredictionType::VPrediction));
    assert_eq!(config.rescale_betas_zero_snr, Some(true));
    // Zero terminal SNR: the first trailing timestep is pure noise for DDIM (alpha_cumprod 0),
    // and the sigma-based samplers keep a finite sigma there (alpha_cumprod = 2^-24).
    for (kind, _, _) in SamplerKind::ALL {
        let sampler = build_sampler(*kind, ScheduleKind::Automatic, &config, 4).expect("builds");
        if let Some(sigmas) = sampler.sigmas() {
            assert!(sigmas.iter().all(|s| s.is_finite()), "{kind:?}: {sigmas:?}");
            if *kind != SamplerKind::Lms && *kind != SamplerKind::Heun {
                assert!((sigmas[0] - 4096.0).abs() < 1.0, "{kind:?}: sigma_max {}", sigmas[0]);
            }
        }
    }
}

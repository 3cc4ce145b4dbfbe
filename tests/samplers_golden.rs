//! Every sampler against diffusers' golden runs: built from the fixture model's own
//! `scheduler_config.json`, the schedule (timesteps, sigmas, init_noise_sigma) must match, and
//! replaying the loop without a UNet (feeding the stored `steps.noise_pred[i]`) must reproduce
//! `steps.latents[i]`, drawing stochastic noise in diffusers' order.

use std::collections::HashMap;

use anyhow::{anyhow, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use sd_worker_rbee::backend::request::{SamplerKind, ScheduleKind};
use sd_worker_rbee::backend::rng::NoiseSource;
use sd_worker_rbee::backend::samplers::{build_sampler, Sampler, SchedulerConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Golden {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

impl Golden {
    fn load(case: &str) -> Result<Self> {
        let path = format!("{FIXTURES}/golden/{case}.safetensors");
        let bytes = std::fs::read(&path).with_context(|| path.clone())?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let fixture = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("fixture"))
            .ok_or_else(|| anyhow!("{case}: no fixture metadata"))?;
        // Python's json writes DPM-Solver's `lambda_min_clipped` as a bare -Infinity.
        let meta = serde_json::from_str(&fixture.replace("-Infinity", "null"))?;
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        Ok(Golden { tensors, meta })
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| anyhow!("missing tensor {name}"))
    }

    fn values(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self.tensor(name)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn cfg(&self) -> bool {
        self.meta["cfg"].as_bool().unwrap_or(true)
    }

    fn steps(&self) -> Result<usize> {
        self.meta["case"]["steps"].as_u64().map(|s| s as usize).ok_or_else(|| anyhow!("no steps"))
    }
}

fn model_config(model: &str) -> Result<SchedulerConfig> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{model}/scheduler/scheduler_config.json"))?;
    Ok(SchedulerConfig::from_json_str(&text)?)
}

/// Hands out `rng.draw01`, `rng.draw02`, ... in order, checking each requested shape.
struct ReplayNoise {
    draws: Vec<Tensor>,
    taken: usize,
}

impl NoiseSource for ReplayNoise {
    fn randn_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor> {
        let draw = self.draws.get(self.taken).cloned().ok_or_else(|| {
            candle_core::Error::Msg(format!("sampler drew more than the {} recorded draws", self.draws.len()))
        })?;
        if draw.dims() != like.dims() {
            return Err(candle_core::Error::Msg(format!("draw shape {:?} for {:?}", draw.dims(), like.dims())));
        }
        self.taken += 1;
        Ok(draw)
    }
}

/// `max|a - b| / max|b|`.
fn relative_error(actual: &Tensor, reference: &Tensor) -> Result<f64> {
    let diff =
        (actual.to_dtype(DType::F64)? - reference.to_dtype(DType::F64)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = reference.to_dtype(DType::F64)?.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(diff / scale)
}

struct Case {
    golden: &'static str,
    model: &'static str,
    kind: SamplerKind,
    schedule: ScheduleKind,
}

const CASES: &[Case] = &[
    Case { golden: "tiny-sd15-euler", model: "tiny-sd15", kind: SamplerKind::Euler, schedule: ScheduleKind::Automatic },
    Case {
        golden: "tiny-sd15-euler_a",
        model: "tiny-sd15",
        kind: SamplerKind::EulerAncestral,
        schedule: ScheduleKind::Automatic,
    },
    Case { golden: "tiny-sd15-ddim", model: "tiny-sd15", kind: SamplerKind::Ddim, schedule: ScheduleKind::Automatic },
    Case { golden: "tiny-sd15-ddpm", model: "tiny-sd15", kind: SamplerKind::Ddpm, schedule: ScheduleKind::Automatic },
    Case {
        golden: "tiny-sd15-dpmpp_2m",
        model: "tiny-sd15",
        kind: SamplerKind::DpmPp2m,
        schedule: ScheduleKind::Automatic,
    },
    Case {
        golden: "tiny-sd15-dpmpp_2m_karras",
        model: "tiny-sd15",
        kind: SamplerKind::DpmPp2m,
        schedule: ScheduleKind::Karras,
    },
    Case { golden: "tiny-sd15-heun", model: "tiny-sd15", kind: SamplerKind::Heun, schedule: ScheduleKind::Automatic },
    Case { golden: "tiny-sd15-lms", model: "tiny-sd15", kind: SamplerKind::Lms, schedule: ScheduleKind::Automatic },
    Case { golden: "tiny-sd15-unipc", model: "tiny-sd15", kind: SamplerKind::UniPc, schedule: ScheduleKind::Automatic },
    Case { golden: "tiny-sd15-lcm", model: "tiny-sd15", kind: SamplerKind::Lcm, schedule: ScheduleKind::Automatic },
    Case { golden: "tiny-sdxl-euler", model: "tiny-sdxl", kind: SamplerKind::Euler, schedule: ScheduleKind::Automatic },
    Case {
        golden: "tiny-sd15-img2img-euler",
        model: "tiny-sd15",
        kind: SamplerKind::Euler,
        schedule: ScheduleKind::Automatic,
    },
];

/// Measured errors of one case, for the report.
struct Replay {
    sigma_error: f64,
    worst_step_error: f64,
    final_error: f64,
}

fn replay(case: &Case) -> Result<Replay> {
    let golden = Golden::load(case.golden)?;
    let steps = golden.steps()?;
    let mut sampler: Box<dyn Sampler> = build_sampler(case.kind, case.schedule, &model_config(case.model)?, steps)?;

    // Schedule: timesteps exactly (float32 values), sigmas and init_noise_sigma to float32 ulps.
    let timesteps = golden.values("scheduler.timesteps")?;
    ensure!(sampler.timesteps() == timesteps.as_slice(), "timesteps {:?} != {:?}", sampler.timesteps(), timesteps);
    let mut sigma_error = 0.0;
    if golden.has("scheduler.sigmas") {
        let reference = golden.values("scheduler.sigmas")?;
        let sigmas = sampler.sigmas().ok_or_else(|| anyhow!("no sigmas"))?;
        ensure!(sigmas.len() == reference.len(), "{} sigmas, expected {}", sigmas.len(), reference.len());
        for (s, r) in sigmas.iter().zip(&reference) {
            sigma_error = f64::max(sigma_error, (s - r).abs() / r.abs().max(1e-30));
        }
        ensure!(sigma_error <= 1e-6, "sigmas {sigmas:?} vs {reference:?}: relative error {sigma_error:e}");
    }
    let init_noise_sigma = golden.values("scheduler.init_noise_sigma")?[0];
    ensure!(
        (sampler.init_noise_sigma() - init_noise_sigma).abs() <= 1e-6 * init_noise_sigma,
        "init_noise_sigma {} vs {init_noise_sigma}",
        sampler.init_noise_sigma()
    );

    // Where the loop starts: img2img runs the last `int(steps * strength)` steps.
    let loop_timesteps = golden.values("steps.timestep")?;
    let start = timesteps.len() - loop_timesteps.len();
    ensure!(sampler.timesteps()[start..] == loop_timesteps[..], "loop timesteps differ");
    let latents_init = golden.tensor("latents.init")?;
    let mode = golden.meta["case"]["mode"].as_str().unwrap_or("txt2img");
    let first_step_draw = if mode == "img2img" {
        // latents.init = add_noise(latents.image, rng.draw01, start), start = t_start * order.
        let t_start = steps - (steps as f64 * golden.meta["case"]["strength"].as_f64().unwrap_or(1.0)) as usize;
        ensure!(start == t_start * sampler.order(), "img2img start {start} != t_start {t_start} * order");
        let noised = sampler.add_noise(golden.tensor("latents.image")?, golden.tensor("rng.draw01")?, start)?;
        let err = relative_error(&noised, latents_init)?;
        ensure!(err <= 1e-6, "add_noise error {err:e}");
        2
    } else {
        let initial = (golden.tensor("rng.draw00")? * sampler.init_noise_sigma())?;
        let err = relative_error(&initial, latents_init)?;
        ensure!(err <= 1e-6, "initial latents error {err:e}");
        1
    };

    // scale_model_input reproduces the UNet's first input (duplicated for the CFG batch).
    let scaled = sampler.scale_model_input(latents_init, start)?;
    let unet_input = if golden.cfg() { Tensor::cat(&[&scaled, &scaled], 0)? } else { scaled };
    let err = relative_error(&unet_input, golden.tensor("unet.step0.sample")?)?;
    ensure!(err <= 1e-6, "scale_model_input error {err:e}");

    // The loop, free-running on our own latents.
    let draw_names: Vec<String> =
        (first_step_draw..).map(|i| format!("rng.draw{i:02}")).take_while(|n| golden.has(n)).collect();
    let draws = draw_names.iter().map(|n| golden.tensor(n).cloned()).collect::<Result<Vec<_>>>()?;
    let expected_draws = draws.len();
    let mut noise = ReplayNoise { draws, taken: 0 };
    let noise_preds = golden.tensor("steps.noise_pred")?;
    let references = golden.tensor("steps.latents")?;
    let mut latents = latents_init.clone();
    let mut worst_step_error = 0f64;
    for k in 0..loop_timesteps.len() {
        latents = sampler.step(&noise_preds.get(k)?, start + k, &latents, &mut noise)?;
        let err = relative_error(&latents, &references.get(k)?)?;
        ensure!(err <= 1e-5, "step {k}: relative error {err:e}");
        worst_step_error = worst_step_error.max(err);
    }
    ensure!(noise.taken == expected_draws, "drew {} noise tensors, diffusers drew {expected_draws}", noise.taken);
    let final_error = relative_error(&latents, golden.tensor("latents.final")?)?;
    ensure!(final_error <= 1e-4, "final latents relative error {final_error:e}");
    Ok(Replay { sigma_error, worst_step_error, final_error })
}

#[test]
fn every_golden_case_replays() {
    let mut failures = Vec::new();
    for case in CASES {
        match replay(case) {
            Ok(r) => eprintln!(
                "{:28} sigma rel err {:.2e}, worst step rel err {:.2e}, final rel err {:.2e}",
                case.golden, r.sigma_error, r.worst_step_error, r.final_error
            ),
            Err(e) => failures.push(format!("{}: {e:#}", case.golden)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

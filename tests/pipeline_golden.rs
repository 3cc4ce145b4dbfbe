//! End-to-end parity with diffusers: every golden case in tests/fixtures/golden runs through our
//! pipeline (same prompt, seed, sampler, size) and must land on diffusers' final latents (within
//! 1e-4 × max|ref|) and on its PNG (within 1/255 mean absolute difference).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sd_worker_rbee::backend::pipeline::conditioning::{encode_prompts, PromptPair};
use sd_worker_rbee::backend::pipeline::generate::{decode, generate_latents, new_sampler, prepare_inputs, ImageSeeds};
use sd_worker_rbee::backend::pipeline::SdModel;
use sd_worker_rbee::backend::request::{
    GenerationRequest, InitImage, MaskImage, MaskSpec, RgbImage, RngKind, SamplerKind, ScheduleKind,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    golden: &'static str,
    model: &'static str,
    sampler: SamplerKind,
    schedule: ScheduleKind,
    steps: u32,
    cfg: f64,
    negative: &'static str,
    /// img2img / inpaint strength (with the init image `<golden>.init.png`).
    strength: Option<f64>,
    mask: bool,
}

const fn txt2img(golden: &'static str, model: &'static str, sampler: SamplerKind) -> Case {
    Case { golden, model, sampler, schedule: ScheduleKind::Automatic, steps: 6, cfg: 7.5, negative: "blurry", strength: None, mask: false }
}

fn load_png_rgb(path: &Path) -> RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    RgbImage { width: img.width(), height: img.height(), pixels: img.into_raw() }
}

fn load_png_mask(path: &Path) -> MaskImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
    MaskImage { width: img.width(), height: img.height(), pixels: img.into_raw() }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().and_then(|a| a.flatten_all()).and_then(|a| a.max(0)).and_then(|m| m.to_scalar::<f32>()).expect("max")
}

fn run_case(case: &Case) {
    let dir = fixtures().join(case.model);
    let model = SdModel::load(case.model, &dir, &Device::Cpu).expect("tiny model loads");
    let golden_path = fixtures().join("golden").join(format!("{}.safetensors", case.golden));
    let golden = candle_core::safetensors::load(&golden_path, &Device::Cpu).expect("golden loads");

    let mut req = GenerationRequest::new("a photo of a cat");
    req.negative_prompt = case.negative.to_string();
    req.width = 64;
    req.height = 64;
    req.steps = case.steps;
    req.cfg_scale = case.cfg;
    req.seed = Some(42);
    req.sampler = case.sampler;
    req.schedule = case.schedule;
    req.rng = RngKind::TorchCpu;
    if let Some(strength) = case.strength {
        let init = load_png_rgb(&fixtures().join("golden").join(format!("{}.init.png", case.golden)));
        req.init_image = Some(InitImage { image: init, strength });
    }
    if case.mask {
        let mask = load_png_mask(&fixtures().join("golden").join(format!("{}.mask.png", case.golden)));
        req.mask = Some(MaskSpec::new(mask));
    }

    let inputs = prepare_inputs(&req).expect("inputs");
    let steps = new_sampler(&req, &model).expect("sampler").timesteps().len();
    let cond = encode_prompts(
        &model,
        &PromptPair { prompt: &req.prompt, negative_prompt: &req.negative_prompt, clip_skip: 1, guidance_scale: req.cfg_scale, width: 64, height: 64, steps, ..Default::default() },
    )
    .expect("conditioning");
    let latents = generate_latents(&model, &req, &inputs, &cond, ImageSeeds::plain(42), &mut |_, _, _| true).expect("generation");

    let reference = &golden["latents.final"];
    let err = max_abs(&(latents.clone() - reference).expect("diff"));
    let bound = 1e-4 * max_abs(reference);
    assert!(err <= bound, "{}: final latents max|diff| {err:e} > {bound:e}", case.golden);

    let image = decode(&model, &latents).expect("decode");
    let expected = load_png_rgb(&fixtures().join("golden").join(format!("{}.png", case.golden)));
    assert_eq!((image.width, image.height), (expected.width, expected.height));
    let mean_abs: f64 = image.pixels.iter().zip(&expected.pixels).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>()
        / image.pixels.len() as f64;
    assert!(mean_abs <= 1.0, "{}: PNG mean abs diff {mean_abs} > 1/255", case.golden);
    eprintln!("{}: latents max|diff| {err:e} (bound {bound:e}), PNG mean abs {mean_abs:.4}", case.golden);
}

#[test]
fn euler_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-euler", "tiny-sd15", SamplerKind::Euler));
}

#[test]
fn euler_ancestral_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-euler_a", "tiny-sd15", SamplerKind::EulerAncestral));
}

#[test]
fn ddim_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-ddim", "tiny-sd15", SamplerKind::Ddim));
}

#[test]
fn ddpm_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-ddpm", "tiny-sd15", SamplerKind::Ddpm));
}

#[test]
fn dpmpp_2m_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-dpmpp_2m", "tiny-sd15", SamplerKind::DpmPp2m));
}

#[test]
fn dpmpp_2m_karras_matches_diffusers() {
    run_case(&Case { schedule: ScheduleKind::Karras, ..txt2img("tiny-sd15-dpmpp_2m_karras", "tiny-sd15", SamplerKind::DpmPp2m) });
}

#[test]
fn heun_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-heun", "tiny-sd15", SamplerKind::Heun));
}

#[test]
fn lms_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-lms", "tiny-sd15", SamplerKind::Lms));
}

#[test]
fn unipc_matches_diffusers() {
    run_case(&txt2img("tiny-sd15-unipc", "tiny-sd15", SamplerKind::UniPc));
}

#[test]
fn lcm_matches_diffusers() {
    run_case(&Case { steps: 4, cfg: 1.0, ..txt2img("tiny-sd15-lcm", "tiny-sd15", SamplerKind::Lcm) });
}

#[test]
fn sdxl_euler_matches_diffusers() {
    run_case(&txt2img("tiny-sdxl-euler", "tiny-sdxl", SamplerKind::Euler));
}

#[test]
fn sdxl_without_negative_prompt_uses_zero_uncond_like_diffusers() {
    run_case(&Case { negative: "", ..txt2img("tiny-sdxl-euler-noneg", "tiny-sdxl", SamplerKind::Euler) });
}

#[test]
fn img2img_matches_diffusers() {
    run_case(&Case { strength: Some(0.6), ..txt2img("tiny-sd15-img2img-euler", "tiny-sd15", SamplerKind::Euler) });
}

#[test]
fn inpaint_with_an_inpainting_unet_matches_diffusers() {
    run_case(&Case { strength: Some(1.0), mask: true, ..txt2img("tiny-sd15-inpaint-euler", "tiny-sd15-inpaint", SamplerKind::Euler) });
}

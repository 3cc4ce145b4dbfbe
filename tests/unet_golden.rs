//! UNet parity with diffusers: the first UNet call of each golden run (`unet.step0.*`), the
//! normalisation epsilons, and that every checkpoint tensor is wired into the model.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sd_worker_rbee::backend::models::unet::{NormRole, SdxlConditioning, UNet2DConditionModel};

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).to_path_buf()
}

fn golden(case: &str) -> HashMap<String, Tensor> {
    let path = fixtures()
        .join("golden")
        .join(format!("{case}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn load_unet(pipe: &str) -> UNet2DConditionModel {
    let dir = fixtures().join(pipe).join("unet");
    let (model, usage) =
        UNet2DConditionModel::load_with_usage(&dir, &Device::Cpu, DType::F32).unwrap();
    assert!(
        usage.unused.is_empty(),
        "{pipe}: unused checkpoint tensors {:?}",
        usage.unused
    );
    assert_eq!(
        usage.loaded, usage.present,
        "{pipe}: loaded vs present tensors"
    );
    model
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Runs `unet.step0` of `case` on `pipe`'s UNet; returns `max|ours - ref| / max|ref|`.
fn step0_relative_error(pipe: &str, case: &str) -> f32 {
    let g = golden(case);
    let unet = load_unet(pipe);
    let sample = &g["unet.step0.sample"];
    let timestep = g["unet.step0.timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let context = Tensor::cat(&[&g["prompt_embeds.uncond"], &g["prompt_embeds.cond"]], 0).unwrap();
    let added = g
        .get("unet.step0.text_embeds")
        .map(|text_embeds| SdxlConditioning {
            text_embeds: text_embeds.clone(),
            time_ids: g["unet.step0.time_ids"].clone(),
        });
    let out = unet
        .forward(sample, timestep, &context, added.as_ref())
        .unwrap();
    let reference = &g["unet.step0.out"];
    assert_eq!(out.dims(), reference.dims());
    let error = max_abs(&(out - reference).unwrap()) / max_abs(reference);
    println!("{case}: timestep {timestep}, max|a-b|/max|ref| = {error:.3e}");
    error
}

const SINGLE_STAGE_TOLERANCE: f32 = 1e-5;

#[test]
fn sd15_euler_step0_matches_diffusers() {
    assert!(step0_relative_error("tiny-sd15", "tiny-sd15-euler") <= SINGLE_STAGE_TOLERANCE);
}

#[test]
fn sd15_ddim_integer_timestep_step0_matches_diffusers() {
    assert!(step0_relative_error("tiny-sd15", "tiny-sd15-ddim") <= SINGLE_STAGE_TOLERANCE);
}

#[test]
fn sdxl_euler_step0_matches_diffusers() {
    assert!(step0_relative_error("tiny-sdxl", "tiny-sdxl-euler") <= SINGLE_STAGE_TOLERANCE);
}

#[test]
fn sd15_inpaint_9_channel_step0_matches_diffusers() {
    assert!(
        step0_relative_error("tiny-sd15-inpaint", "tiny-sd15-inpaint-euler")
            <= SINGLE_STAGE_TOLERANCE
    );
}

/// Fixture README section 2: resnet and conv_norm_out GroupNorms 1e-5 (`norm_eps`), the
/// Transformer2D input GroupNorm 1e-6, transformer LayerNorms 1e-5. Also checks that every
/// norm weight in the checkpoint belongs to a norm the model reports.
#[test]
fn norm_epsilons_match_diffusers() {
    for pipe in ["tiny-sd15", "tiny-sd15-inpaint", "tiny-sdxl"] {
        let unet = load_unet(pipe);
        let norms = unet.norm_epsilons();
        for norm in &norms {
            let expected = match norm.role {
                NormRole::Resnet | NormRole::Output => 1e-5,
                NormRole::TransformerInput => 1e-6,
                NormRole::TransformerLayer => 1e-5,
            };
            assert_eq!(
                norm.eps, expected,
                "{pipe}: {} ({:?})",
                norm.path, norm.role
            );
        }
        let roles: BTreeSet<String> = norms.iter().map(|n| format!("{:?}", n.role)).collect();
        assert_eq!(roles.len(), 4, "{pipe}: every norm role present");

        let file = fixtures()
            .join(pipe)
            .join("unet/diffusion_pytorch_model.safetensors");
        let norm_weights: BTreeSet<String> = candle_core::safetensors::load(file, &Device::Cpu)
            .unwrap()
            .into_keys()
            .filter_map(|key| key.strip_suffix(".weight").map(str::to_string))
            .filter(|module| {
                module
                    .rsplit('.')
                    .next()
                    .is_some_and(|leaf| leaf.starts_with("norm") || leaf == "conv_norm_out")
            })
            .collect();
        let reported: BTreeSet<String> = norms.iter().map(|n| n.path.clone()).collect();
        assert_eq!(
            reported, norm_weights,
            "{pipe}: norms in model vs checkpoint"
        );
    }
}

/// A fractional timestep (Euler's second step, t = 799.2), checked through CFG against
/// `steps.noise_pred[1]`: the UNet input is `steps.latents[0]` scaled by Euler's
/// `1 / sqrt(sigma^2 + 1)` and duplicated for `[uncond, cond]`.
#[test]
fn sd15_euler_fractional_timestep_matches_diffusers() {
    let g = golden("tiny-sd15-euler");
    let unet = load_unet("tiny-sd15");
    let timestep = g["steps.timestep"].to_vec1::<f32>().unwrap()[1];
    assert_eq!(timestep, 799.2);
    let sigma = g["scheduler.sigmas"].to_vec1::<f32>().unwrap()[1];
    let scale = Tensor::new(&[(sigma * sigma + 1.0).sqrt()], &Device::Cpu).unwrap();
    let latents = g["steps.latents"].get(0).unwrap();
    let sample = Tensor::cat(&[&latents, &latents], 0)
        .unwrap()
        .broadcast_div(&scale)
        .unwrap();
    let context = Tensor::cat(&[&g["prompt_embeds.uncond"], &g["prompt_embeds.cond"]], 0).unwrap();
    let out = unet
        .forward(&sample, timestep as f64, &context, None)
        .unwrap();
    let (uncond, cond) = (out.narrow(0, 0, 1).unwrap(), out.narrow(0, 1, 1).unwrap());
    let guided = (&uncond + ((cond - &uncond).unwrap() * 7.5).unwrap()).unwrap();
    let reference = g["steps.noise_pred"].get(1).unwrap();
    let error = max_abs(&(guided - &reference).unwrap()) / max_abs(&reference);
    println!(
        "tiny-sd15-euler step 1: timestep {timestep}, CFG-guided max|a-b|/max|ref| = {error:.3e}"
    );
    assert!(error <= SINGLE_STAGE_TOLERANCE);
}

//! Round trips: the tiny diffusers fixtures written as LDM single files load back to the same
//! tensors, and generate the same image bit-for-bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::clip_keys::transformers_to_open_clip;
use super::ldm_writer::{ldm_tensors, write_ldm_checkpoint};
use super::*;
use crate::backend::models::clip_text::ClipTextModel;
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::test_support::{fixture, load_golden, max_abs_error};
use crate::backend::pipeline::conditioning::{encode_prompts, PromptPair};
use crate::backend::pipeline::generate::{generate_latents, prepare_inputs, ImageSeeds};
use crate::backend::pipeline::model::SdModel;
use crate::backend::request::{GenerationRequest, RngKind, SamplerKind};
use crate::backend::samplers::scheduler_config::PredictionType;

fn options(heads: HeadOverrides) -> CheckpointOptions {
    CheckpointOptions { tokenizer: TokenizerSource::Dir(fixture("clip-tokenizer")), v_prediction: None, heads, config_yaml: None }
}

/// The tiny fixtures' text encoders have 8-wide heads (4 of them), not CLIP's 64-wide ones.
fn tiny_heads(unet: Option<Vec<usize>>) -> HeadOverrides {
    HeadOverrides { unet, text_encoder: Some(4), text_encoder_2: Some(4) }
}

fn write(dir: &Path, fixture_name: &str) -> PathBuf {
    let path = dir.join(format!("{fixture_name}.safetensors"));
    write_ldm_checkpoint(&fixture(fixture_name), &path);
    path
}

/// Every tensor equal, bit for bit, under the same names.
fn assert_same_tensors(what: &str, ours: &TensorMap, reference: &TensorMap) {
    let mut ours_names: Vec<&String> = ours.keys().collect();
    let mut reference_names: Vec<&String> = reference.keys().filter(|k| !k.ends_with("position_ids")).collect();
    ours_names.sort();
    reference_names.sort();
    assert_eq!(ours_names, reference_names, "{what}: tensor names");
    for (name, tensor) in ours {
        let expected = &reference[name];
        assert_eq!(tensor.dims(), expected.dims(), "{what}: {name} shape");
        let a = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: {name} differs");
    }
}

/// The configs agree on everything that shapes the network (the folder's config also records
/// the stored dtype and an unused projection width).
fn assert_same_clip(ours: &ClipTextModel, reference: &ClipTextModel) {
    let (a, b) = (ours.config(), reference.config());
    assert_eq!(
        (a.vocab_size, a.hidden_size, a.intermediate_size, a.num_hidden_layers, a.num_attention_heads, a.hidden_act, a.max_position_embeddings),
        (b.vocab_size, b.hidden_size, b.intermediate_size, b.num_hidden_layers, b.num_attention_heads, b.hidden_act, b.max_position_embeddings)
    );
    assert_eq!(a.layer_norm_eps, b.layer_norm_eps);
    assert_eq!(ours.has_projection(), reference.has_projection());
}

fn assert_same_weights(converted: &SdModel, folder: &SdModel) {
    assert_same_tensors("unet", &converted.weights.unet, &folder.weights.unet);
    assert_same_tensors("vae", &converted.weights.vae, &folder.weights.vae);
    assert_same_tensors("text_encoder", &converted.weights.text_encoder, &folder.weights.text_encoder);
    match (&converted.weights.text_encoder_2, &folder.weights.text_encoder_2) {
        (Some(a), Some(b)) => assert_same_tensors("text_encoder_2", a, b),
        (None, None) => {}
        _ => panic!("text_encoder_2 present in only one model"),
    }
}

/// Final latents of a short txt2img run (seed 42, 64x64, Euler, CFG 7.5).
fn latents(model: &SdModel, steps: u32) -> Tensor {
    let mut req = GenerationRequest::new("a photo of a cat");
    req.negative_prompt = "blurry".into();
    (req.width, req.height, req.steps, req.cfg_scale) = (64, 64, steps, 7.5);
    (req.sampler, req.rng) = (SamplerKind::Euler, RngKind::TorchCpu);
    let inputs = prepare_inputs(&req).unwrap();
    let pair = PromptPair { prompt: &req.prompt, negative_prompt: &req.negative_prompt, clip_skip: 1, guidance_scale: 7.5, width: 64, height: 64, steps: steps as usize, ..Default::default() };
    let cond = encode_prompts(model, &pair).unwrap();
    generate_latents(model, &req, &inputs, &cond, ImageSeeds::plain(42), &mut |_, _, _| true).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn sd15_single_file_reproduces_the_diffusers_folder_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "tiny-sd15");
    let (converted, info) = load_checkpoint("tiny-sd15.safetensors", &path, &options(tiny_heads(None)), &Device::Cpu).unwrap();
    assert_eq!((info.family, info.inpainting, info.v_prediction), (CheckpointFamily::Sd1, false, false));
    assert_eq!(info.prediction_rule, PredictionRule::Default);
    assert_eq!(info.ignored_tensors, 3, "position_ids, alphas_cumprod, model_ema.decay");
    let folder = SdModel::load("tiny-sd15", &fixture("tiny-sd15"), &Device::Cpu).unwrap();
    assert_same_weights(&converted, &folder);
    assert_eq!(converted.scheduler, folder.scheduler, "SD 1.5's reference scheduler config");
    assert_eq!(converted.unet.config().layout().unwrap(), folder.unet.config().layout().unwrap());
    assert_same_clip(&converted.text_encoder, &folder.text_encoder);
    assert_eq!(converted.vae.config().block_out_channels, folder.vae.config().block_out_channels);

    let ours = latents(&converted, 6);
    let reference = latents(&folder, 6);
    assert_eq!(bits(&ours), bits(&reference), "single-file and folder latents differ");
    // And both are diffusers' (the euler golden: same prompt, seed, size, steps).
    let golden = load_golden("tiny-sd15-euler");
    let expected = &golden["latents.final"];
    let (err, scale) = max_abs_error(&ours, expected);
    println!("single-file tiny-sd15 vs diffusers golden: max|diff| {err:e} (max|ref| {scale:e})");
    assert!(err <= 1e-4 * scale);
}

#[test]
fn sdxl_single_file_reproduces_the_diffusers_folder_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "tiny-sdxl");
    let (converted, info) = load_checkpoint("tiny-sdxl", &path, &options(tiny_heads(Some(vec![2, 4]))), &Device::Cpu).unwrap();
    assert_eq!((info.family, info.inpainting, info.v_prediction), (CheckpointFamily::Sdxl, false, false));
    let folder = SdModel::load("tiny-sdxl", &fixture("tiny-sdxl"), &Device::Cpu).unwrap();
    assert_same_weights(&converted, &folder);
    assert_eq!(converted.unet.config().layout().unwrap(), folder.unet.config().layout().unwrap());
    assert_same_clip(&converted.text_encoder, &folder.text_encoder);
    assert_same_clip(&converted.second.as_ref().unwrap().encoder, &folder.second.as_ref().unwrap().encoder);
    assert_eq!(converted.scheduler, folder.scheduler);
    assert!(converted.force_zeros_for_empty_prompt);
    assert_eq!(bits(&latents(&converted, 2)), bits(&latents(&folder, 2)));
}

#[test]
fn inpainting_single_file_is_detected_from_conv_in() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "tiny-sd15-inpaint");
    let (converted, info) = load_checkpoint("inpaint", &path, &options(tiny_heads(None)), &Device::Cpu).unwrap();
    assert!(info.inpainting && converted.is_inpainting_model());
    let folder = SdModel::load("inpaint", &fixture("tiny-sd15-inpaint"), &Device::Cpu).unwrap();
    assert_same_weights(&converted, &folder);
}

#[test]
fn prediction_type_rules_apply_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "tiny-sd15");
    // 2. A sidecar .yaml beside the file.
    std::fs::write(path.with_extension("yaml"), "model:\n  params:\n    parameterization: \"v\"\n").unwrap();
    let (model, info) = load_checkpoint("m", &path, &options(tiny_heads(None)), &Device::Cpu).unwrap();
    assert_eq!((info.v_prediction, info.prediction_rule), (true, PredictionRule::Sidecar));
    assert_eq!(model.scheduler.prediction_type, Some(PredictionType::VPrediction));
    assert_eq!(info.sidecar.as_deref(), Some(path.with_extension("yaml").as_path()));
    // 1. The override beats it.
    let mut forced = options(tiny_heads(None));
    forced.v_prediction = Some(false);
    let (model, info) = load_checkpoint("m", &path, &forced, &Device::Cpu).unwrap();
    assert_eq!((info.v_prediction, info.prediction_rule), (false, PredictionRule::Override));
    assert_ne!(model.scheduler.prediction_type, Some(PredictionType::VPrediction));
    // 3. A `v_pred` marker tensor (and `ztsnr`).
    std::fs::remove_file(path.with_extension("yaml")).unwrap();
    let mut tensors = ldm_tensors(&fixture("tiny-sd15"));
    tensors.insert("v_pred".into(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
    tensors.insert("ztsnr".into(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let (model, info) = load_checkpoint("m", &path, &options(tiny_heads(None)), &Device::Cpu).unwrap();
    assert_eq!((info.v_prediction, info.prediction_rule), (true, PredictionRule::VPredKey));
    assert_eq!(model.scheduler.rescale_betas_zero_snr, Some(true));
}

/// tiny-sd15 with its text encoder stored the SD 2.x way (OpenCLIP under
/// `cond_stage_model.model.`): detected as SD 2, last layer dropped, probe decides v vs eps.
#[test]
fn sd2_layout_is_detected_and_probed() {
    let mut tensors: HashMap<String, Tensor> = ldm_tensors(&fixture("tiny-sd15"))
        .into_iter()
        .filter(|(k, _)| !k.starts_with("cond_stage_model."))
        .collect();
    let te = candle_core::safetensors::load(fixture("tiny-sd15/text_encoder/model.safetensors"), &Device::Cpu).unwrap();
    let mut fused: HashMap<String, Vec<(usize, Tensor)>> = HashMap::new();
    for (name, tensor) in te {
        match transformers_to_open_clip(&name).unwrap() {
            (open, Some(i)) => fused.entry(open).or_default().push((i, tensor)),
            (open, None) => {
                tensors.insert(format!("cond_stage_model.model.{open}"), tensor);
            }
        }
    }
    for (open, mut parts) in fused {
        parts.sort_by_key(|(i, _)| *i);
        let parts: Vec<Tensor> = parts.into_iter().map(|(_, t)| t).collect();
        tensors.insert(format!("cond_stage_model.model.{open}"), Tensor::cat(&parts, 0).unwrap());
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sd2.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let (model, info) = load_checkpoint("sd2", &path, &options(tiny_heads(Some(vec![8, 8]))), &Device::Cpu).unwrap();
    assert_eq!(info.family, CheckpointFamily::Sd2);
    assert_eq!(info.prediction_rule, PredictionRule::Sd2Probe);
    assert_eq!(model.text_encoder.config().num_hidden_layers, 4, "SD 2 drops the last of 5 layers");
    assert!(!model.text_encoder.has_projection());
    assert_eq!(model.tokenizer.pad_id(), 0, "OpenCLIP pads with '!'");
    let expected = if info.v_prediction { PredictionType::VPrediction } else { PredictionType::Epsilon };
    assert_eq!(model.scheduler.prediction_type, Some(expected));
    assert_eq!(model.unet.config().sample_size, Some(if info.v_prediction { 96 } else { 64 }));
    assert!(model.unet.config().upcast_attention);
}

#[test]
fn files_that_are_not_checkpoints_say_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vae.safetensors");
    let vae: HashMap<String, Tensor> = ldm_tensors(&fixture("tiny-sd15"))
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("first_stage_model.").map(|k| (k.to_string(), v)))
        .collect();
    candle_core::safetensors::save(&vae, &path).unwrap();
    let err = load_checkpoint("x", &path, &options(HeadOverrides::default()), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("VAE folder"), "{err}");
    let pickle = tmp.path().join("model.ckpt");
    std::fs::write(&pickle, b"\x80\x02}q").unwrap();
    let err = load_checkpoint("x", &pickle, &options(HeadOverrides::default()), &Device::Cpu).unwrap_err();
    assert!(matches!(err, CheckpointError::Pickle { .. }), "{err}");
}

//! The runner behind the real engine with a models folder: switching, LoRA per job (applied,
//! reported, and gone afterwards), VAE override.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::loading::ModelLoader;
use super::runner::{resident_from_entry, SdRunner};
use crate::backend::checkpoint::ldm_writer::{ldm_tensors, write_ldm_checkpoint};
use crate::backend::checkpoint::tokenizers::TokenizerSource;
use crate::backend::checkpoint::{CheckpointOptions, HeadOverrides};
use crate::backend::generation_engine::{EngineState, GenerationEngine};
use crate::backend::model_library::{LibraryOptions, ModelLibrary};
use crate::backend::models::test_support::fixture;
use crate::backend::request::{GeneratedImage, GenerationRequest, JobError, JobEvent, LoraSpec, RngKind, SamplerKind};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// DIR/{tiny-sd15/ (diffusers), Stable-diffusion/tiny-ldm.safetensors, Lora/style.safetensors,
/// VAE/tiny-vae.safetensors}.
fn models_dir(root: &Path) {
    copy_dir(&fixture("tiny-sd15"), &root.join("tiny-sd15"));
    std::fs::create_dir_all(root.join("Stable-diffusion")).unwrap();
    write_ldm_checkpoint(&fixture("tiny-sd15"), &root.join("Stable-diffusion/tiny-ldm.safetensors"));
    let vae: std::collections::HashMap<String, Tensor> = ldm_tensors(&fixture("tiny-sd15"))
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("first_stage_model.").map(|k| (k.to_string(), v)))
        .collect();
    std::fs::create_dir_all(root.join("VAE")).unwrap();
    candle_core::safetensors::save(&vae, root.join("VAE/tiny-vae.safetensors")).unwrap();
    std::fs::create_dir_all(root.join("Lora")).unwrap();
    let values = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + seed) % 5) as f32 * 0.02 - 0.04).collect() };
    let lora: Vec<(String, Tensor)> = vec![
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight".into(), Tensor::from_vec(values(64, 1), (32, 2), &Device::Cpu).unwrap()),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight".into(), Tensor::from_vec(values(64, 2), (2, 32), &Device::Cpu).unwrap()),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight".into(), Tensor::from_vec(values(74, 3), (37, 2), &Device::Cpu).unwrap()),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight".into(), Tensor::from_vec(values(64, 4), (2, 32), &Device::Cpu).unwrap()),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha".into(), Tensor::new(1f32, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()),
    ];
    let data: Vec<(&str, &Tensor)> = lora.iter().map(|(k, t)| (k.as_str(), t)).collect();
    safetensors::serialize_to_file(data, None, &root.join("Lora/style.safetensors")).unwrap();
}

fn engine(root: &Path, max_resident: usize) -> (Arc<GenerationEngine>, Arc<ModelLibrary>) {
    let library = ModelLibrary::open(root, LibraryOptions::default()).unwrap();
    let loader = ModelLoader {
        device: Device::Cpu,
        checkpoint: CheckpointOptions {
            tokenizer: TokenizerSource::Dir(fixture("clip-tokenizer")),
            v_prediction: None,
            // The tiny fixtures' text encoder has 4 heads of width 8.
            heads: HeadOverrides { unet: None, text_encoder: Some(4), text_encoder_2: Some(4) },
            config_yaml: None,
        },
    };
    let entry = library.resolve_checkpoint("tiny-sd15").unwrap();
    let default = resident_from_entry(&entry, loader.load(&entry.title, &entry.path, entry.format).unwrap());
    let runner = SdRunner::with_library(default, entry.format, loader, Some(library.clone()), max_resident);
    (GenerationEngine::start(4, move || Ok(runner)), library)
}

fn request() -> GenerationRequest {
    let mut req = GenerationRequest::new("a photo of a cat");
    (req.width, req.height, req.steps, req.cfg_scale, req.seed) = (64, 64, 2, 7.5, Some(7));
    (req.sampler, req.rng) = (SamplerKind::Euler, RngKind::TorchCpu);
    req
}

fn pixels(image: &GeneratedImage) -> Vec<u8> {
    image::load_from_memory(&image.bytes).unwrap().to_rgb8().into_raw()
}

fn run(engine: &GenerationEngine, req: GenerationRequest) -> Result<GeneratedImage, JobError> {
    let mut handle = engine.submit(req).unwrap();
    let mut image = None;
    loop {
        match handle.events.blocking_recv().expect("a terminal event") {
            JobEvent::Image(i) => image = Some(i),
            JobEvent::Done => return Ok(image.expect("an image before Done")),
            JobEvent::Failed(e) => return Err(e),
            JobEvent::Cancelled => panic!("cancelled"),
            _ => {}
        }
    }
}

#[test]
fn requests_switch_models_by_any_a1111_name() {
    let tmp = tempfile::tempdir().unwrap();
    models_dir(tmp.path());
    let (engine, library) = engine(tmp.path(), 1);
    let folder = library.resolve_checkpoint("tiny-sd15").unwrap();
    let single = library.resolve_checkpoint("tiny-ldm").unwrap();

    let base = run(&engine, request()).unwrap();
    assert!(base.infotext.contains(&format!("Model hash: {}, Model: tiny-sd15,", folder.hash)), "{}", base.infotext);
    let mut other = request();
    other.model = Some(single.title.clone());
    let switched = run(&engine, other).unwrap();
    assert!(switched.infotext.contains(&format!("Model hash: {}, Model: tiny-ldm,", single.hash)), "{}", switched.infotext);
    assert_eq!(engine.status().model_id.as_deref(), Some(single.title.as_str()));
    assert_eq!(engine.status().state, EngineState::Idle);
    // The single file is the same network: same pixels.
    assert_eq!(pixels(&switched), pixels(&base));
    // By hash, back to the folder (evicting the single file: one resident model).
    let mut back = request();
    back.model = Some(folder.hash.clone());
    let again = run(&engine, back).unwrap();
    assert_eq!(again.bytes, base.bytes, "the reloaded model reproduces its first image");
    // Switch away again, then a request naming no model reloads the evicted default.
    let mut away = request();
    away.model = Some("tiny-ldm".into());
    run(&engine, away).unwrap();
    assert_eq!(run(&engine, request()).unwrap().bytes, base.bytes);
    assert_eq!(engine.status().model_id.as_deref(), Some(folder.title.as_str()));
    let mut missing = request();
    missing.model = Some("no-such-model".into());
    assert!(matches!(run(&engine, missing), Err(JobError::ModelUnavailable(m)) if m.contains("no-such-model")));
    let mut escape = request();
    escape.model = Some("../../etc/passwd".into());
    assert!(matches!(run(&engine, escape), Err(JobError::InvalidRequest { field, .. }) if field == "model"));
    engine.shutdown();
}

#[test]
fn a_lora_job_is_reported_and_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    models_dir(tmp.path());
    let (engine, library) = engine(tmp.path(), 2);
    let base = run(&engine, request()).unwrap();

    let mut with_lora = request();
    with_lora.loras = vec![LoraSpec::new("style", 0.8), LoraSpec::new("ghost", 1.0)];
    let lora_image = run(&engine, with_lora.clone()).unwrap();
    let hash = library.lora_hash(&library.resolve_lora("style").unwrap()).unwrap();
    assert!(lora_image.infotext.contains(&format!("Lora hashes: \"style: {hash}\"")), "{}", lora_image.infotext);
    assert_eq!(lora_image.warnings.len(), 1);
    assert!(lora_image.warnings[0].contains("'ghost'"), "{:?}", lora_image.warnings);
    assert_ne!(lora_image.bytes, base.bytes, "the LoRA changed nothing");
    // Same set again: same image (from the cached merge).
    assert_eq!(run(&engine, with_lora).unwrap().bytes, lora_image.bytes);
    // And without LoRAs the base model is exactly what it was.
    let after = run(&engine, request()).unwrap();
    assert_eq!(after.bytes, base.bytes, "base weights were not restored exactly");
    assert!(after.warnings.is_empty() && !after.infotext.contains("Lora hashes"));
    engine.shutdown();
}

#[test]
fn a_vae_override_swaps_only_the_vae() {
    let tmp = tempfile::tempdir().unwrap();
    models_dir(tmp.path());
    let (engine, library) = engine(tmp.path(), 1);
    let base = run(&engine, request()).unwrap();
    let mut with_vae = request();
    with_vae.vae = Some("tiny-vae.safetensors".into());
    let swapped = run(&engine, with_vae).unwrap();
    let vae = library.resolve_vae("tiny-vae").unwrap().unwrap();
    let vae_hash = library.vae_hash(&vae).unwrap();
    assert!(swapped.infotext.contains(&format!("VAE hash: {vae_hash}, VAE: tiny-vae.safetensors")), "{}", swapped.infotext);
    // The file holds the model's own VAE weights (LDM layout): identical pixels.
    assert_eq!(pixels(&swapped), pixels(&base));
    let mut unknown = request();
    unknown.vae = Some("nope.safetensors".into());
    let fallback = run(&engine, unknown).unwrap();
    assert!(fallback.warnings.iter().any(|w| w.contains("nope.safetensors")), "{:?}", fallback.warnings);
    let mut automatic = request();
    automatic.vae = Some("Automatic".into());
    assert!(run(&engine, automatic).unwrap().warnings.is_empty());
    engine.shutdown();
}

#[test]
fn prompt_embeddings_are_applied_reported_and_refused_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    models_dir(tmp.path());
    let dir = tmp.path().join("embeddings");
    std::fs::create_dir_all(&dir).unwrap();
    let vectors = |width: usize| (Tensor::arange(0f32, (2 * width) as f32, &Device::Cpu).unwrap().reshape((2, width)).unwrap() * 0.01).unwrap();
    candle_core::safetensors::save(&[("emb_params".to_string(), vectors(32))].into(), dir.join("tiword.safetensors")).unwrap();
    candle_core::safetensors::save(&[("emb_params".to_string(), vectors(768))].into(), dir.join("wide.safetensors")).unwrap();
    std::fs::write(dir.join("oldword.pt"), b"not unpickled").unwrap();
    let (engine, library) = engine(tmp.path(), 1);
    let base = run(&engine, request()).unwrap();

    let mut with_embedding = request();
    with_embedding.prompt = "a photo of a cat, <tiword>".into();
    with_embedding.negative_prompt = "wide, oldword".into();
    let image = run(&engine, with_embedding).unwrap();
    let hash = &library.lookup_embedding("tiword").unwrap().hash;
    assert_eq!(hash.len(), 12);
    assert!(image.infotext.contains(&format!("TI hashes: \"tiword: {hash}\"")), "{}", image.infotext);
    assert_eq!(image.warnings.len(), 2, "{:?}", image.warnings);
    assert!(image.warnings[0].contains("'wide'") && image.warnings[0].contains("768"), "{:?}", image.warnings);
    assert!(image.warnings[1].contains("'oldword'") && image.warnings[1].contains("pickle"), "{:?}", image.warnings);
    assert_ne!(image.bytes, base.bytes);
    // Prompts that name no embedding are untouched.
    let after = run(&engine, request()).unwrap();
    assert_eq!(after.bytes, base.bytes);
    assert!(after.warnings.is_empty() && !after.infotext.contains("TI hashes"));
    engine.shutdown();
}

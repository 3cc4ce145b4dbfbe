//! Test helper: write a diffusers folder as an A1111/LDM single-file checkpoint, the way the
//! original training code stores it (UNet under `model.diffusion_model.` with LDM names, VAE
//! under `first_stage_model.` with 1x1-conv attention projections, CLIP under
//! `cond_stage_model.transformer.`, SDXL's OpenCLIP under `conditioner.embedders.1.model.` with
//! fused `in_proj` and a transposed `text_projection`), plus the buffers real checkpoints carry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::clip_keys::transformers_to_open_clip;
use super::convert::UNET_PREFIX;
use super::unet_keys::UnetKeyMap;
use super::vae_keys::diffusers_vae_to_ldm;
use crate::backend::models::unet::UNetConfig;
use crate::backend::models::vae::VaeConfig;

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The LDM tensors of the pipeline in `dir` (weights keep their stored dtype).
pub fn ldm_tensors(dir: &Path) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let unet_config = UNetConfig::from_json(&std::fs::read_to_string(dir.join("unet/config.json")).unwrap()).unwrap();
    let map = UnetKeyMap::new(&unet_config.layout().unwrap());
    for (name, tensor) in load(&dir.join("unet/diffusion_pytorch_model.safetensors")) {
        let ldm = map.diffusers_to_ldm(&name).unwrap_or_else(|| panic!("no LDM name for {name}"));
        out.insert(format!("{UNET_PREFIX}{ldm}"), tensor);
    }
    let vae_config = VaeConfig::from_file(&dir.join("vae/config.json")).unwrap();
    let levels = vae_config.block_out_channels.len();
    for (name, tensor) in load(&dir.join("vae/diffusion_pytorch_model.safetensors")) {
        let (ldm, transform) = diffusers_vae_to_ldm(&name, levels).unwrap_or_else(|| panic!("no LDM name for {name}"));
        out.insert(format!("first_stage_model.{ldm}"), transform.apply(&tensor).unwrap());
    }
    let sdxl = dir.join("text_encoder_2").is_dir();
    let clip_prefix = if sdxl { "conditioner.embedders.0.transformer." } else { "cond_stage_model.transformer." };
    for (name, tensor) in load(&dir.join("text_encoder/model.safetensors")) {
        out.insert(format!("{clip_prefix}{name}"), tensor);
    }
    if sdxl {
        let mut fused: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
        for (name, tensor) in load(&dir.join("text_encoder_2/model.safetensors")) {
            let (open, part) = transformers_to_open_clip(&name).unwrap_or_else(|| panic!("no OpenCLIP name for {name}"));
            match part {
                Some(i) => fused.entry(open).or_default()[i] = Some(tensor),
                None if open == "text_projection" => {
                    out.insert(format!("conditioner.embedders.1.model.{open}"), tensor.t().unwrap().contiguous().unwrap());
                }
                None => {
                    out.insert(format!("conditioner.embedders.1.model.{open}"), tensor);
                }
            }
        }
        for (open, parts) in fused {
            let parts: Vec<Tensor> = parts.into_iter().map(|p| p.expect("q, k and v all present")).collect();
            out.insert(format!("conditioner.embedders.1.model.{open}"), Tensor::cat(&parts, 0).unwrap());
        }
    } else {
        let ids: Vec<i64> = (0..77).collect();
        out.insert(format!("{clip_prefix}text_model.embeddings.position_ids"), Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap());
    }
    // Training leftovers every LDM checkpoint has; a loader must skip them.
    out.insert("alphas_cumprod".into(), Tensor::ones(1000, DType::F32, &Device::Cpu).unwrap());
    out.insert("model_ema.decay".into(), Tensor::new(0.9999f32, &Device::Cpu).unwrap());
    out
}

/// Write [`ldm_tensors`] of `dir` to `path`.
pub fn write_ldm_checkpoint(dir: &Path, path: &Path) {
    candle_core::safetensors::save(&ldm_tensors(dir), path).unwrap();
}

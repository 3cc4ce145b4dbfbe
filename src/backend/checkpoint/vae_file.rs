//! Standalone VAE files (A1111's `models/VAE`): LDM names (`encoder.down.0.block.0...`, as
//! `vae-ft-mse-840000-ema-pruned.safetensors` ships), optionally under `first_stage_model.`,
//! or diffusers names (`encoder.down_blocks.0.resnets.0...`). The config comes from the shapes.

use std::path::Path;

use candle_core::{DType, Device};

use super::configs::vae_config;
use super::header::CheckpointHeader;
use super::vae_keys::ldm_vae_to_diffusers;
use super::CheckpointError;
use crate::backend::models::tensor_map::{load_tensors_renamed, TensorMap};
use crate::backend::models::vae::VaeConfig;

const PREFIXES: &[&str] = &["first_stage_model.", "vae."];

/// The VAE in `path`, renamed to diffusers names, with its derived config. `scaling_factor` is
/// the checkpoint's (a swapped VAE decodes the same latents).
pub fn load_vae_file(path: &Path, scaling_factor: f64, dtype: DType, device: &Device) -> Result<(VaeConfig, TensorMap), CheckpointError> {
    let header = CheckpointHeader::read(path)?;
    let prefix = PREFIXES.iter().copied().find(|p| header.names().any(|n| n.starts_with(p))).unwrap_or("");
    let diffusers_names = header.names().any(|n| n.starts_with(&format!("{prefix}encoder.down_blocks.")));
    let up_levels = header.indices(&format!("{prefix}decoder.up.")).len();
    let mut transforms = std::collections::HashMap::new();
    let mut tensors = load_tensors_renamed(&[path.to_path_buf()], dtype, device, |name| {
        let rest = name.strip_prefix(prefix)?;
        if diffusers_names {
            return Some(rest.to_string());
        }
        let (ours, transform) = ldm_vae_to_diffusers(rest, up_levels)?;
        transforms.insert(ours.clone(), transform);
        Some(ours)
    })?;
    for (name, transform) in transforms {
        if let Some(tensor) = tensors.get(&name) {
            let reshaped = transform.apply(tensor)?;
            tensors.insert(name, reshaped);
        }
    }
    if tensors.is_empty() {
        return Err(CheckpointError::NotACheckpoint { reason: format!("'{}' holds no VAE tensors", path.display()) });
    }
    let config = vae_config(&tensors, scaling_factor)?;
    Ok((config, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::checkpoint::ldm_writer::ldm_tensors;
    use crate::backend::models::test_support::fixture;
    use candle_core::Tensor;
    use std::collections::HashMap;

    #[test]
    fn ldm_and_diffusers_vae_files_load_to_the_same_tensors() {
        let tmp = tempfile::tempdir().unwrap();
        let ldm: HashMap<String, Tensor> = ldm_tensors(&fixture("tiny-sd15"))
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("first_stage_model.").map(|k| (k.to_string(), v)))
            .collect();
        let ldm_path = tmp.path().join("vae-ldm.safetensors");
        candle_core::safetensors::save(&ldm, &ldm_path).unwrap();
        let diffusers_path = fixture("tiny-sd15/vae/diffusion_pytorch_model.safetensors");
        let (config_a, a) = load_vae_file(&ldm_path, 0.18215, DType::F32, &Device::Cpu).unwrap();
        let (config_b, b) = load_vae_file(&diffusers_path, 0.18215, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(config_a, config_b);
        let reference = VaeConfig::from_file(&fixture("tiny-sd15/vae/config.json")).unwrap();
        assert_eq!(config_a.block_out_channels, reference.block_out_channels);
        assert_eq!(config_a.layers_per_block, reference.layers_per_block);
        let mut names_a: Vec<&String> = a.keys().collect();
        let mut names_b: Vec<&String> = b.keys().collect();
        names_a.sort();
        names_b.sort();
        assert_eq!(names_a, names_b);
        for (name, t) in &a {
            let diff = (t - &b[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "{name}");
        }
    }
}

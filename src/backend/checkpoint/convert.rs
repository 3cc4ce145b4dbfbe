//! Renaming a single-file checkpoint into per-network tensor maps with our (diffusers /
//! transformers) names: a plan says, for every checkpoint tensor we use, which network it goes
//! to under which name and how it is reshaped; executing the plan reads each tensor once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::clip_keys::{clip_to_transformers, open_clip_to_transformers};
use super::detect::{CheckpointFamily, DetectedModel};
use super::header::CheckpointHeader;
use super::unet_keys::UnetKeyMap;
use super::vae_keys::ldm_vae_to_diffusers;
use super::CheckpointError;
use crate::backend::models::tensor_map::{open_safetensors, TensorMap};

/// How a checkpoint tensor becomes ours. All of these move data only: the converted model is
/// bit-for-bit the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Copy,
    /// 1x1 convolution kernels `[o, i, 1, 1]` (or `[o, i, 1]`) as linear weights `[o, i]`;
    /// tensors of rank 2 or less are left alone (biases).
    SqueezeTo2d,
    /// Linear weights `[o, i]` as 1x1 convolution kernels `[o, i, 1, 1]` (the inverse).
    UnsqueezeTo4d,
    /// A 2-D tensor transposed (OpenCLIP's `text_projection` is stored `[hidden, proj]`).
    Transpose,
    /// Part `index` of `of` equal parts along dim 0 (a fused q/k/v projection).
    Chunk { index: usize, of: usize },
}

impl Transform {
    pub fn apply(self, tensor: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Transform::Copy => Ok(tensor.clone()),
            Transform::SqueezeTo2d => {
                let dims = tensor.dims();
                if dims.len() > 2 && dims[2..].iter().all(|&d| d == 1) {
                    tensor.reshape((dims[0], dims[1]))
                } else {
                    Ok(tensor.clone())
                }
            }
            Transform::UnsqueezeTo4d => match tensor.dims() {
                &[o, i] => tensor.reshape((o, i, 1, 1)),
                _ => Ok(tensor.clone()),
            },
            Transform::Transpose => tensor.t()?.contiguous(),
            Transform::Chunk { index, of } => {
                let rows = tensor.dim(0)?;
                if of == 0 || rows % of != 0 {
                    candle_core::bail!("cannot split {rows} rows into {of} equal parts");
                }
                tensor.narrow(0, index * rows / of, rows / of)
            }
        }
    }
}

/// The networks of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    TextEncoder2,
}

pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// `first_stage_model.` in LDM/SGM checkpoints; `vae.` in some re-exports.
const VAE_PREFIXES: &[&str] = &["first_stage_model.", "vae."];
const SD1_CLIP_PREFIX: &str = "cond_stage_model.transformer.";
const SD2_OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
const SDXL_CLIP_PREFIX: &str = "conditioner.embedders.0.transformer.";
const SDXL_OPEN_CLIP_PREFIX: &str = "conditioner.embedders.1.model.";

/// Where every used checkpoint tensor goes.
#[derive(Debug, Default)]
pub struct ConversionPlan {
    targets: BTreeMap<String, Vec<(Component, String, Transform)>>,
    /// Checkpoint tensors no network uses (EMA copies, training buffers, ...).
    pub ignored: Vec<String>,
    /// UNet tensors whose LDM name has no place in the derived layout: a sign of an
    /// architecture we do not build.
    pub unmapped_unet: Vec<String>,
}

impl ConversionPlan {
    pub fn new(header: &CheckpointHeader, detected: &DetectedModel, unet_map: &UnetKeyMap) -> Self {
        let mut plan = ConversionPlan::default();
        let vae_prefix = VAE_PREFIXES.iter().copied().find(|p| header.names().any(|n| n.starts_with(p))).unwrap_or(VAE_PREFIXES[0]);
        let up_levels = header.indices(&format!("{vae_prefix}decoder.up.")).len();
        let sd2_skipped_layer = match detected.family {
            // SD 2.x conditions on the penultimate layer: the last resblock is never run.
            CheckpointFamily::Sd2 => header.indices(&format!("{SD2_OPEN_CLIP_PREFIX}transformer.resblocks.")).last().copied(),
            _ => None,
        };
        let mut names: Vec<&str> = header.names().collect();
        names.sort_unstable();
        for name in names {
            let targets: Vec<(Component, String, Transform)> = if let Some(rest) = name.strip_prefix(UNET_PREFIX) {
                match unet_map.ldm_to_diffusers(rest) {
                    Some(ours) => vec![(Component::Unet, ours, Transform::Copy)],
                    None => {
                        plan.unmapped_unet.push(name.to_string());
                        Vec::new()
                    }
                }
            } else if let Some(rest) = name.strip_prefix(vae_prefix) {
                ldm_vae_to_diffusers(rest, up_levels).map(|(n, t)| vec![(Component::Vae, n, t)]).unwrap_or_default()
            } else {
                match detected.family {
                    CheckpointFamily::Sd1 => name
                        .strip_prefix(SD1_CLIP_PREFIX)
                        .and_then(clip_to_transformers)
                        .map(|n| vec![(Component::TextEncoder, n, Transform::Copy)])
                        .unwrap_or_default(),
                    CheckpointFamily::Sd2 => name
                        .strip_prefix(SD2_OPEN_CLIP_PREFIX)
                        .map(|rest| tag(Component::TextEncoder, open_clip_to_transformers(rest, sd2_skipped_layer, false)))
                        .unwrap_or_default(),
                    CheckpointFamily::Sdxl => {
                        if let Some(rest) = name.strip_prefix(SDXL_CLIP_PREFIX) {
                            clip_to_transformers(rest).map(|n| vec![(Component::TextEncoder, n, Transform::Copy)]).unwrap_or_default()
                        } else if let Some(rest) = name.strip_prefix(SDXL_OPEN_CLIP_PREFIX) {
                            tag(Component::TextEncoder2, open_clip_to_transformers(rest, None, true))
                        } else {
                            Vec::new()
                        }
                    }
                }
            };
            if targets.is_empty() {
                if !name.starts_with(UNET_PREFIX) {
                    plan.ignored.push(name.to_string());
                }
            } else {
                plan.targets.insert(name.to_string(), targets);
            }
        }
        plan
    }

    /// Read the planned tensors of `path` into one map per network, in `dtype` on `device`.
    pub fn execute(&self, path: &Path, dtype: DType, device: &Device) -> Result<HashMap<Component, TensorMap>, CheckpointError> {
        let unreadable = |e: String| CheckpointError::Unreadable { path: path.to_path_buf(), reason: e };
        let source = open_safetensors(&[path.to_path_buf()]).map_err(|e| unreadable(e.to_string()))?;
        let mut out: HashMap<Component, TensorMap> = HashMap::new();
        for (name, targets) in &self.targets {
            let tensor = source.load(name, device).and_then(|t| t.to_dtype(dtype)).map_err(|e| unreadable(format!("{name}: {e}")))?;
            for (component, ours, transform) in targets {
                let converted = transform.apply(&tensor).map_err(|e| unreadable(format!("{name}: {e}")))?;
                out.entry(*component).or_default().insert(ours.clone(), converted);
            }
        }
        Ok(out)
    }
}

fn tag(component: Component, renamed: Vec<(String, Transform)>) -> Vec<(Component, String, Transform)> {
    renamed.into_iter().map(|(n, t)| (component, n, t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_move_data_only() {
        let dev = Device::Cpu;
        let t = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((6, 2)).unwrap();
        let chunk = Transform::Chunk { index: 1, of: 3 }.apply(&t).unwrap();
        assert_eq!(chunk.to_vec2::<f32>().unwrap(), vec![vec![4.0, 5.0], vec![6.0, 7.0]]);
        let conv = Transform::UnsqueezeTo4d.apply(&t).unwrap();
        assert_eq!(conv.dims(), &[6, 2, 1, 1]);
        let back = Transform::SqueezeTo2d.apply(&conv).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let bias = Tensor::zeros(6, DType::F32, &dev).unwrap();
        assert_eq!(Transform::SqueezeTo2d.apply(&bias).unwrap().dims(), &[6]);
        assert_eq!(Transform::Transpose.apply(&t).unwrap().dims(), &[2, 6]);
        assert!(Transform::Chunk { index: 0, of: 4 }.apply(&t).is_err());
    }
}

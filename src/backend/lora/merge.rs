//! Applying LoRAs: `W' = W + Σ strength · (alpha / rank) · up @ down` for every matched weight,
//! computed in f32 and stored in the model's dtype. The patched networks are built from a copy
//! of the base tensor map with only the touched tensors replaced (the rest stay shared), so the
//! base model is never changed and "removing" a LoRA is just using the base model again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{DType, Tensor};

use super::file::{LoraFile, LoraModule};
use super::targets::{LoraComponent, LoraTargets, Target};
use super::LoraError;
use crate::backend::models::clip_text::ClipTextModel;
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::unet::UNet2DConditionModel;
use crate::backend::pipeline::model::SdModel;

/// One LoRA with its strengths for one job.
#[derive(Debug, Clone)]
pub struct AppliedLora {
    pub file: Arc<LoraFile>,
    pub unet_strength: f64,
    pub te_strength: f64,
}

/// What applying a set of LoRAs did, per file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraMatch {
    pub matched: usize,
    /// Module names of the file that match no weight of this model (plus skipped ones).
    pub unmatched: Vec<String>,
}

/// The update of one module as a tensor shaped like `base` (f32, on `base`'s device).
pub fn module_delta(module: &LoraModule, base: &Tensor) -> Result<Tensor, candle_core::Error> {
    let device = base.device();
    let down = module.down.to_device(device)?;
    let up = module.up.to_device(device)?;
    let rank = module.rank();
    let out = up.dim(0)?;
    let up2 = up.reshape((out, rank))?;
    let delta = match &module.mid {
        None => {
            let down2 = down.reshape((rank, down.elem_count() / rank.max(1)))?;
            let product = up2.matmul(&down2)?;
            match down.dims() {
                &[_, inputs, kh, kw] => product.reshape((out, inputs, kh, kw))?,
                _ => product,
            }
        }
        Some(mid) => {
            // CP decomposition: delta[o, i, k, l] = Σ_ab up[o, a] mid[a, b, k, l] down[b, i].
            let mid = mid.to_device(device)?;
            let (_, _, kh, kw) = mid.dims4()?;
            let inputs = down.dim(1)?;
            let down2 = down.reshape((rank, inputs))?;
            let core = mid.permute((2, 3, 0, 1))?.reshape((kh * kw, rank, rank))?;
            let left = up2.unsqueeze(0)?.broadcast_as((kh * kw, out, rank))?.contiguous()?.matmul(&core)?;
            let full = left.matmul(&down2.unsqueeze(0)?.broadcast_as((kh * kw, rank, inputs))?.contiguous()?)?;
            full.permute((1, 2, 0))?.reshape((out, inputs, kh, kw))?
        }
    };
    fit_to(&delta, base)
}

/// Reshape (or, for an inpainting UNet's 9-channel `conv_in`, zero-pad as A1111 does) a delta
/// to the base weight's shape.
fn fit_to(delta: &Tensor, base: &Tensor) -> Result<Tensor, candle_core::Error> {
    if delta.dims() == base.dims() {
        return Ok(delta.clone());
    }
    if delta.elem_count() == base.elem_count() {
        return delta.reshape(base.dims());
    }
    if let (&[o, i, kh, kw], &[bo, bi, bkh, bkw]) = (delta.dims(), base.dims()) {
        if (o, kh, kw) == (bo, bkh, bkw) && i < bi {
            return delta.pad_with_zeros(1, 0, bi - i);
        }
    }
    candle_core::bail!("LoRA update {:?} does not fit weight {:?}", delta.dims(), base.dims())
}

/// `base` with `loras` merged in. Files with no module matching this model are refused; other
/// unmatched modules are reported per file and logged.
pub fn apply_loras(base: &SdModel, targets: &LoraTargets, loras: &[AppliedLora]) -> Result<(SdModel, Vec<LoraMatch>), LoraError> {
    let mut deltas: BTreeMap<Target, Tensor> = BTreeMap::new();
    let mut matches = Vec::with_capacity(loras.len());
    for lora in loras {
        let mut matched = 0;
        let mut unmatched: Vec<String> = lora.file.skipped.keys().cloned().collect();
        for (name, module) in &lora.file.modules {
            let Some(target) = targets.find(name) else {
                unmatched.push(name.clone());
                continue;
            };
            matched += 1;
            let strength = if target.component.is_text_encoder() { lora.te_strength } else { lora.unet_strength };
            if strength == 0.0 {
                continue;
            }
            let weight = component_tensors(base, target.component)
                .and_then(|map| map.get(&target.weight))
                .ok_or_else(|| LoraError::Apply(format!("{} has no {}", base.id, target.weight)))?;
            let delta = (module_delta(module, weight).map_err(|e| apply_error(&lora.file, name, e))? * (module.scale() * strength))
                .map_err(|e| apply_error(&lora.file, name, e))?;
            let sum = match deltas.remove(target) {
                Some(previous) => (previous + delta).map_err(|e| apply_error(&lora.file, name, e))?,
                None => delta,
            };
            deltas.insert(target.clone(), sum);
        }
        tracing::info!(lora = %lora.file.path.display(), model = %base.id, matched, unmatched = unmatched.len(), "LoRA keys matched");
        if matched == 0 {
            return Err(LoraError::NothingMatched {
                path: lora.file.path.clone(),
                modules: lora.file.modules.len() + lora.file.skipped.len(),
                example: unmatched.first().cloned().unwrap_or_default(),
            });
        }
        if let Some(first) = unmatched.first() {
            tracing::warn!(lora = %lora.file.path.display(), unmatched = unmatched.len(), first = %first, "LoRA modules with no matching weight were skipped");
        }
        matches.push(LoraMatch { matched, unmatched });
    }
    Ok((patched_model(base, deltas)?, matches))
}

fn apply_error(file: &LoraFile, module: &str, e: candle_core::Error) -> LoraError {
    LoraError::Apply(format!("{} {module}: {e}", file.path.display()))
}

fn component_tensors(model: &SdModel, component: LoraComponent) -> Option<&TensorMap> {
    match component {
        LoraComponent::Unet => Some(&model.weights.unet),
        LoraComponent::TextEncoder => Some(&model.weights.text_encoder),
        LoraComponent::TextEncoder2 => model.weights.text_encoder_2.as_deref(),
    }
}

/// `weight + delta` computed in f32 (an f16 weight plus a small delta would lose the delta's
/// low bits in f16 arithmetic) and stored back in the weight's dtype.
pub fn merged_weight(weight: &Tensor, delta: &Tensor) -> Result<Tensor, candle_core::Error> {
    (weight.to_dtype(DType::F32)? + delta.to_dtype(DType::F32)?)?.to_dtype(weight.dtype())
}

/// Rebuild the networks that have deltas; everything else is shared with `base`.
fn patched_model(base: &SdModel, deltas: BTreeMap<Target, Tensor>) -> Result<SdModel, LoraError> {
    let mut by_component: HashMap<LoraComponent, Vec<(String, Tensor)>> = HashMap::new();
    for (target, delta) in deltas {
        by_component.entry(target.component).or_default().push((target.weight, delta));
    }
    let mut model = base.clone();
    let (dtype, device) = (base.dtype, base.device.clone());
    for (component, updates) in by_component {
        let Some(original) = component_tensors(base, component) else { continue };
        let mut tensors = original.clone();
        for (name, delta) in updates {
            let merged = merged_weight(&original[&name], &delta)?;
            tensors.insert(name, merged);
        }
        let tensors = Arc::new(tensors);
        match component {
            LoraComponent::Unet => {
                let (unet, _) = UNet2DConditionModel::from_tensors(base.unet.config().clone(), tensors.clone(), dtype, &device)?;
                model.unet = Arc::new(unet);
                model.weights.unet = tensors;
            }
            LoraComponent::TextEncoder => {
                let (encoder, _) = ClipTextModel::from_tensors(base.text_encoder.config().clone(), tensors.clone(), dtype, &device)?;
                model.text_encoder = Arc::new(encoder);
                model.weights.text_encoder = tensors;
            }
            LoraComponent::TextEncoder2 => {
                if let Some(second) = model.second.as_mut() {
                    let (encoder, _) = ClipTextModel::from_tensors(second.encoder.config().clone(), tensors.clone(), dtype, &device)?;
                    second.encoder = Arc::new(encoder);
                    model.weights.text_encoder_2 = Some(tensors);
                }
            }
        }
    }
    Ok(model)
}

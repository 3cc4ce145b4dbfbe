//! Which of a model's weights a LoRA module name patches. The index is built from the model's
//! own weight names (never by guessing where kohya's underscores were dots): every weight of
//! rank 2 or more gets its kohya name (`lora_unet_` + module path with dots as underscores),
//! the kohya name of its LDM/SGM module path (kohya's SDXL LoRAs name the original UNet's
//! modules, `lora_unet_input_blocks_4_1_proj_in`), and its dotted diffusers name.

use std::collections::HashMap;

use crate::backend::checkpoint::unet_keys::UnetKeyMap;
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::pipeline::model::SdModel;

/// The networks a LoRA can patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraComponent {
    Unet,
    TextEncoder,
    TextEncoder2,
}

impl LoraComponent {
    pub fn is_text_encoder(self) -> bool {
        !matches!(self, LoraComponent::Unet)
    }
}

/// One weight of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub component: LoraComponent,
    /// The weight's name in the component's tensor map (`....to_q.weight`).
    pub weight: String,
}

/// Module name (as LoRA files spell it) → weight, for one model.
#[derive(Debug, Clone, Default)]
pub struct LoraTargets {
    by_name: HashMap<String, Target>,
}

impl LoraTargets {
    pub fn new(model: &SdModel) -> Self {
        let mut targets = LoraTargets::default();
        let unet_map = model.unet.config().layout().ok().map(|layout| UnetKeyMap::new(&layout));
        for module in patchable_modules(&model.weights.unet) {
            let target = Target { component: LoraComponent::Unet, weight: format!("{module}.weight") };
            targets.add(&format!("lora_unet_{}", flat(&module)), &target);
            targets.add(&format!("unet.{module}"), &target);
            targets.add(&module, &target);
            if let Some(ldm) = unet_map.as_ref().and_then(|m| m.diffusers_to_ldm(&module)) {
                targets.add(&format!("lora_unet_{}", flat(&ldm)), &target);
            }
        }
        // SD LoRAs say `lora_te_`, SDXL ones `lora_te1_` for the first encoder; either works.
        for module in patchable_modules(&model.weights.text_encoder) {
            let target = Target { component: LoraComponent::TextEncoder, weight: format!("{module}.weight") };
            for prefix in ["lora_te_", "lora_te1_"] {
                targets.add(&format!("{prefix}{}", flat(&module)), &target);
            }
            targets.add(&format!("text_encoder.{module}"), &target);
        }
        if let Some(second) = &model.weights.text_encoder_2 {
            for module in patchable_modules(second) {
                let target = Target { component: LoraComponent::TextEncoder2, weight: format!("{module}.weight") };
                targets.add(&format!("lora_te2_{}", flat(&module)), &target);
                targets.add(&format!("text_encoder_2.{module}"), &target);
            }
        }
        targets
    }

    fn add(&mut self, name: &str, target: &Target) {
        self.by_name.entry(name.to_string()).or_insert_with(|| target.clone());
    }

    /// The weight a LoRA module name patches. PEFT's `base_model.model.` wrapper and a missing
    /// `text_model.` level (transformers >= 5.6 flattened CLIPTextModel) are looked through.
    pub fn find(&self, module: &str) -> Option<&Target> {
        let module = module.strip_prefix("base_model.model.").unwrap_or(module);
        self.by_name.get(module).or_else(|| {
            let (encoder, rest) = module.split_once('.')?;
            if encoder.starts_with("text_encoder") && !rest.starts_with("text_model.") {
                self.by_name.get(&format!("{encoder}.text_model.{rest}"))
            } else {
                None
            }
        })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Module paths of the weights a low-rank update can apply to: 2-D (linear) and 4-D (conv)
/// `*.weight` tensors. Norms and biases are 1-D; token/position embedding tables are not LoRA
/// targets (the time/added embeddings' linears are).
fn patchable_modules(tensors: &TensorMap) -> Vec<String> {
    let mut modules: Vec<String> = tensors
        .iter()
        .filter(|(name, t)| matches!(t.rank(), 2 | 4) && !name.ends_with("_embedding.weight"))
        .filter_map(|(name, _)| name.strip_suffix(".weight").map(str::to_string))
        .collect();
    modules.sort();
    modules
}

fn flat(module: &str) -> String {
    module.replace('.', "_")
}

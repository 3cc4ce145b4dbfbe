//! Facts about the loaded model that faces need to fill in what a client left out: the size it
//! was trained at, the grid its sides must sit on, and the steps / guidance / sampler it works
//! best with. The runner reports them once loaded; the engine exposes them in its status.

use crate::backend::request::{GenerationRequest, SamplerKind};

/// What a face may assume about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Width the model was trained at (512 for SD 1.5, 1024 for SDXL).
    pub native_width: u32,
    pub native_height: u32,
    /// Image sides must be multiples of this.
    pub size_multiple: u32,
    pub default_steps: u32,
    /// 0 turns classifier-free guidance off (distilled models).
    pub default_cfg_scale: f64,
    pub default_sampler: SamplerKind,
}

impl ModelInfo {
    /// Defaults for a model known only by its native (square) size and size grid. Distilled
    /// models are recognised by the conventional words in their id, because their configs look
    /// like any other SD model's: they need few steps and no (or weak) guidance.
    pub fn for_model(model_id: &str, native_size: u32, size_multiple: u32) -> Self {
        let (default_steps, default_cfg_scale, default_sampler) = Distillation::of(model_id).defaults();
        ModelInfo {
            native_width: native_size,
            native_height: native_size,
            size_multiple: size_multiple.max(1),
            default_steps,
            default_cfg_scale,
            default_sampler,
        }
    }

    /// What [`GenerationRequest::new`] assumes: an SD 1.x model at 512 px.
    pub fn sd15() -> Self {
        ModelInfo::for_model("", 512, 8)
    }

    /// Fill the model-dependent defaults into a request (size, steps, guidance, sampler).
    pub fn apply_defaults(&self, request: &mut GenerationRequest) {
        request.width = self.native_width;
        request.height = self.native_height;
        request.steps = self.default_steps;
        request.cfg_scale = self.default_cfg_scale;
        request.sampler = self.default_sampler;
    }
}

/// How a checkpoint was distilled, which decides its sensible defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distillation {
    None,
    /// SD-Turbo / SDXL-Turbo (adversarial diffusion distillation): 1–4 steps, no guidance.
    Turbo,
    /// SDXL-Lightning / Hyper-SD: few steps, no guidance.
    Lightning,
    /// Latent consistency models: the LCM sampler, ~4 steps, guidance about 1.
    Lcm,
}

impl Distillation {
    fn of(model_id: &str) -> Self {
        let id = model_id.to_ascii_lowercase();
        if id.contains("turbo") {
            Distillation::Turbo
        } else if id.contains("lightning") || id.contains("hyper-sd") {
            Distillation::Lightning
        } else if id.contains("lcm") {
            Distillation::Lcm
        } else {
            Distillation::None
        }
    }

    fn defaults(self) -> (u32, f64, SamplerKind) {
        match self {
            Distillation::None => (20, 7.5, SamplerKind::Euler),
            Distillation::Turbo => (1, 0.0, SamplerKind::EulerAncestral),
            Distillation::Lightning => (4, 0.0, SamplerKind::Euler),
            Distillation::Lcm => (4, 1.0, SamplerKind::Lcm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_matches_the_request_defaults() {
        let mut req = GenerationRequest::new("x");
        let before = (req.width, req.height, req.steps, req.cfg_scale, req.sampler);
        ModelInfo::sd15().apply_defaults(&mut req);
        assert_eq!((req.width, req.height, req.steps, req.cfg_scale, req.sampler), before);
    }

    #[test]
    fn distilled_models_get_few_steps_and_no_guidance() {
        let turbo = ModelInfo::for_model("stabilityai/sd-turbo", 512, 8);
        assert_eq!((turbo.default_steps, turbo.default_cfg_scale), (1, 0.0));
        let xl = ModelInfo::for_model("/models/sdxl-lightning-4step", 1024, 8);
        assert_eq!((xl.native_width, xl.default_steps, xl.default_cfg_scale), (1024, 4, 0.0));
        assert_eq!(ModelInfo::for_model("lcm-dreamshaper-v7", 512, 8).default_sampler, SamplerKind::Lcm);
        assert_eq!(ModelInfo::for_model("runwayml/stable-diffusion-v1-5", 512, 8).default_steps, 20);
    }
}

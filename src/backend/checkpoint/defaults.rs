//! What the weights cannot tell, per family, as the reference diffusers repos have it:
//! `runwayml/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1` (and `-2-1-base` for
//! epsilon SD 2), `stabilityai/stable-diffusion-xl-base-1.0`.

use super::detect::CheckpointFamily;

/// Every CLIP text encoder SD uses has 64-wide heads: ViT-L 768/12, ViT-H 1024/16, ViT-bigG 1280/20.
pub const CLIP_HEAD_DIM: usize = 64;

/// SD 2.x and SDXL UNets use 64 channels per head (`num_head_channels: 64`).
pub const UNET_HEAD_CHANNELS: usize = 64;

/// SD 1.x UNets have 8 heads in every block (`num_heads: 8`).
pub const SD1_UNET_HEADS: usize = 8;

/// The VAE latent scaling factor.
pub fn vae_scaling_factor(family: CheckpointFamily) -> f64 {
    match family {
        CheckpointFamily::Sd1 | CheckpointFamily::Sd2 => 0.18215,
        CheckpointFamily::Sdxl => 0.13025,
    }
}

/// The UNet's `sample_size` (latent side at the trained resolution).
pub fn unet_sample_size(family: CheckpointFamily, v_prediction: bool) -> usize {
    match family {
        CheckpointFamily::Sd1 => 64,
        // 768-v vs 512-base.
        CheckpointFamily::Sd2 if v_prediction => 96,
        CheckpointFamily::Sd2 => 64,
        CheckpointFamily::Sdxl => 128,
    }
}

/// SD 2.x's UNet config sets `upcast_attention` (its attention overflows in fp16).
pub fn unet_upcast_attention(family: CheckpointFamily) -> bool {
    family == CheckpointFamily::Sd2
}

/// The scheduler config of the family's reference repo, with the prediction type resolved.
pub fn scheduler_config_json(family: CheckpointFamily, v_prediction: bool, zero_terminal_snr: bool) -> String {
    let prediction = if v_prediction { "v_prediction" } else { "epsilon" };
    let mut config = match family {
        CheckpointFamily::Sd1 => serde_json::json!({
            "_class_name": "PNDMScheduler",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
            "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null
        }),
        CheckpointFamily::Sd2 => serde_json::json!({
            "_class_name": "DDIMScheduler",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
            "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null
        }),
        CheckpointFamily::Sdxl => serde_json::json!({
            "_class_name": "EulerDiscreteScheduler",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
            "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true,
            "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null,
            "use_karras_sigmas": false
        }),
    };
    // SD 1.5's config omits prediction_type (epsilon by default); write it only when it is v
    // there, so an epsilon SD 1.x config stays byte-for-byte the reference one.
    if v_prediction || family != CheckpointFamily::Sd1 {
        config["prediction_type"] = prediction.into();
    }
    if zero_terminal_snr {
        config["rescale_betas_zero_snr"] = true.into();
    }
    config.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::samplers::scheduler_config::PredictionType;
    use crate::backend::samplers::SchedulerConfig;

    #[test]
    fn scheduler_configs_parse_with_the_resolved_prediction() {
        let sd2 = SchedulerConfig::from_json_str(&scheduler_config_json(CheckpointFamily::Sd2, true, false)).unwrap();
        assert_eq!(sd2.prediction_type, Some(PredictionType::VPrediction));
        let sd1 = SchedulerConfig::from_json_str(&scheduler_config_json(CheckpointFamily::Sd1, false, false)).unwrap();
        assert_eq!(sd1.prediction_type, None);
        assert_eq!(sd1.steps_offset, Some(1));
        let xl = SchedulerConfig::from_json_str(&scheduler_config_json(CheckpointFamily::Sdxl, true, true)).unwrap();
        assert_eq!(xl.prediction_type, Some(PredictionType::VPrediction));
        assert_eq!(xl.rescale_betas_zero_snr, Some(true));
    }
}

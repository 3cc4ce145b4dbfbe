//! One loaded Stable Diffusion pipeline: tokenizers, text encoders, UNet, VAE and the scheduler
//! config, read from a diffusers-layout folder. Loaded once, reused by every job.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::backend::models::clip_text::ClipTextModel;
use crate::backend::models::error::ModelError;
use crate::backend::models::text_conditioning::force_zeros_for_empty_prompt;
use crate::backend::models::tokenizer::ClipTokenizer;
use crate::backend::models::unet::UNet2DConditionModel;
use crate::backend::models::vae::AutoencoderKl;
use crate::backend::samplers::SchedulerConfig;

/// Which conditioning scheme the pipeline uses; detected from the folder, not from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x / 2.x: one CLIP, last (or clip-skipped) hidden state.
    Sd,
    /// SDXL: two CLIPs, penultimate states concatenated, pooled + time-id added conditioning.
    Sdxl,
}

/// The second text encoder of SDXL with its tokenizer.
pub struct SecondTextEncoder {
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextModel,
}

pub struct SdModel {
    pub id: String,
    pub dir: PathBuf,
    pub family: Family,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub second: Option<SecondTextEncoder>,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKl,
    pub scheduler: SchedulerConfig,
    /// SDXL: an empty negative prompt means all-zero uncond embeddings.
    pub force_zeros_for_empty_prompt: bool,
    pub device: Device,
    pub dtype: DType,
}

impl SdModel {
    /// Load every component of a diffusers folder. f32 compute on CPU (fp16 weights are upcast).
    pub fn load(id: &str, dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let dtype = if device.is_cpu() { DType::F32 } else { DType::F16 };
        let started = std::time::Instant::now();
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder = ClipTextModel::load(&dir.join("text_encoder"), device, dtype)?;
        let second = if dir.join("text_encoder_2").join("config.json").is_file() {
            Some(SecondTextEncoder {
                tokenizer: ClipTokenizer::from_dir(&dir.join("tokenizer_2"))?,
                encoder: ClipTextModel::load(&dir.join("text_encoder_2"), device, dtype)?,
            })
        } else {
            None
        };
        let unet = UNet2DConditionModel::load(&dir.join("unet"), device, dtype)?;
        let vae = AutoencoderKl::load(&dir.join("vae"), device, dtype)?;
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler_text = std::fs::read_to_string(&scheduler_path).map_err(|e| ModelError::io(&scheduler_path, e))?;
        let scheduler = SchedulerConfig::from_json_str(&scheduler_text).map_err(|e| ModelError::bad_config(&scheduler_path, e.to_string()))?;
        let family = if second.is_some() { Family::Sdxl } else { Family::Sd };
        let force_zeros = family == Family::Sdxl && force_zeros_for_empty_prompt(dir).unwrap_or(true);
        tracing::info!(model = id, ?family, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(SdModel {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            family,
            tokenizer,
            text_encoder,
            second,
            unet,
            vae,
            scheduler,
            force_zeros_for_empty_prompt: force_zeros,
            device: device.clone(),
            dtype,
        })
    }

    /// Pixels per latent cell (8 for real SD, 2 for the tiny test VAEs).
    pub fn vae_scale_factor(&self) -> u32 {
        self.vae.config().downscale_factor() as u32
    }

    /// Image sides must be multiples of this: the VAE factor times the UNet's total downsampling.
    pub fn size_multiple(&self) -> u32 {
        let levels = self.unet.config().block_out_channels.len().max(1) as u32;
        self.vae_scale_factor() * (1 << (levels - 1))
    }

    /// The size the model was trained at (`sample_size` × VAE factor): 512 for SD 1.5, 1024 for SDXL.
    pub fn native_size(&self) -> u32 {
        // diffusers' default UNet sample_size is 64 (512 px for SD 1.x).
        self.unet.config().sample_size.unwrap_or(64) as u32 * self.vae_scale_factor()
    }

    /// Few-step distilled models (SD-Turbo, SDXL-Turbo, LCM, Lightning) want 1–4 steps and no
    /// CFG. Nothing in a diffusers folder says so reliably, so go by the name users know them by.
    pub fn is_distilled(&self) -> bool {
        let name = format!("{} {}", self.id, self.dir.display()).to_ascii_lowercase();
        ["turbo", "lcm", "lightning", "hyper"].iter().any(|k| name.contains(k))
    }

    /// A 9-channel UNet takes mask + masked-image latents (a dedicated inpainting model).
    pub fn is_inpainting_model(&self) -> bool {
        self.unet.config().in_channels == 9
    }
}

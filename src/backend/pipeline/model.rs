//! One loaded Stable Diffusion pipeline: tokenizers, text encoders, UNet, VAE and the scheduler
//! config, read from a diffusers-layout folder or converted from a single-file checkpoint.
//! Loaded once, reused by every job.
//!
//! Every part is behind an `Arc`, and the tensors each network was built from are kept
//! ([`NetworkWeights`]): a LoRA'd or VAE-swapped variant is a cheap clone with one network
//! replaced, and the base model is never mutated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::backend::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::backend::models::error::ModelError;
use crate::backend::models::tensor_map::{load_tensors, TensorMap};
use crate::backend::models::text_conditioning::force_zeros_for_empty_prompt;
use crate::backend::models::tokenizer::ClipTokenizer;
use crate::backend::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::backend::models::vae::{AutoencoderKl, VaeConfig};
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
#[derive(Clone)]
pub struct SecondTextEncoder {
    pub tokenizer: Arc<ClipTokenizer>,
    pub encoder: Arc<ClipTextModel>,
}

/// The tensors each network was built from (named as diffusers/transformers name them).
#[derive(Clone)]
pub struct NetworkWeights {
    pub unet: Arc<TensorMap>,
    pub vae: Arc<TensorMap>,
    pub text_encoder: Arc<TensorMap>,
    pub text_encoder_2: Option<Arc<TensorMap>>,
}

#[derive(Clone)]
pub struct SdModel {
    pub id: String,
    pub dir: PathBuf,
    pub family: Family,
    pub tokenizer: Arc<ClipTokenizer>,
    pub text_encoder: Arc<ClipTextModel>,
    pub second: Option<SecondTextEncoder>,
    pub unet: Arc<UNet2DConditionModel>,
    pub vae: Arc<AutoencoderKl>,
    pub scheduler: SchedulerConfig,
    /// SDXL: an empty negative prompt means all-zero uncond embeddings.
    pub force_zeros_for_empty_prompt: bool,
    pub device: Device,
    pub dtype: DType,
    pub weights: NetworkWeights,
}

impl std::fmt::Debug for SdModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdModel").field("id", &self.id).field("dir", &self.dir).field("family", &self.family).finish_non_exhaustive()
    }
}

/// Everything a pipeline is made of, before the networks are built: configs, tensors (already
/// in our module names), tokenizers and the scheduler config. Both loaders produce this.
pub struct PipelineParts {
    pub id: String,
    /// Where the model came from (a diffusers folder, or the checkpoint file).
    pub source: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: (ClipTextConfig, TensorMap),
    /// SDXL's second tokenizer and encoder.
    pub second: Option<(ClipTokenizer, ClipTextConfig, TensorMap)>,
    pub unet: (UNetConfig, TensorMap),
    pub vae: (VaeConfig, TensorMap),
    pub scheduler: SchedulerConfig,
    pub force_zeros_for_empty_prompt: Option<bool>,
}

/// f32 compute on CPU (fp16 weights are upcast), f16 on accelerators.
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

impl SdModel {
    /// Load every component of a diffusers folder.
    pub fn load(id: &str, dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let dtype = compute_dtype(device);
        let started = std::time::Instant::now();
        let second = if dir.join("text_encoder_2").join("config.json").is_file() {
            Some((
                ClipTokenizer::from_dir(&dir.join("tokenizer_2"))?,
                ClipTextConfig::from_file(&dir.join("text_encoder_2").join("config.json"))?,
                load_folder_tensors(&dir.join("text_encoder_2"), dtype, device)?,
            ))
        } else {
            None
        };
        let unet_config_path = dir.join("unet").join("config.json");
        let unet_config_text = std::fs::read_to_string(&unet_config_path).map_err(|e| ModelError::io(&unet_config_path, e))?;
        let unet_files = crate::backend::models::unet::weights::weight_files(&dir.join("unet"))?;
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler_text = std::fs::read_to_string(&scheduler_path).map_err(|e| ModelError::io(&scheduler_path, e))?;
        let parts = PipelineParts {
            id: id.to_string(),
            source: dir.to_path_buf(),
            tokenizer: ClipTokenizer::from_dir(&dir.join("tokenizer"))?,
            text_encoder: (
                ClipTextConfig::from_file(&dir.join("text_encoder").join("config.json"))?,
                load_folder_tensors(&dir.join("text_encoder"), dtype, device)?,
            ),
            force_zeros_for_empty_prompt: if second.is_some() { force_zeros_for_empty_prompt(dir).ok() } else { None },
            second,
            unet: (UNetConfig::from_json(&unet_config_text)?, load_tensors(&unet_files, dtype, device)?),
            vae: (VaeConfig::from_file(&dir.join("vae").join("config.json"))?, load_folder_tensors(&dir.join("vae"), dtype, device)?),
            scheduler: SchedulerConfig::from_json_str(&scheduler_text)
                .map_err(|e| ModelError::bad_config(&scheduler_path, e.to_string()))?,
        };
        let model = Self::from_parts(parts, device)?;
        tracing::info!(model = id, family = ?model.family, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(model)
    }

    /// Build every network from its config and tensors. Tensors the networks leave unused are
    /// logged (they mean a wiring bug or a checkpoint for another architecture).
    pub fn from_parts(parts: PipelineParts, device: &Device) -> Result<Self, ModelError> {
        let dtype = compute_dtype(device);
        let source = parts.source.clone();
        let text_encoder_weights = Arc::new(parts.text_encoder.1);
        let (text_encoder, usage) = ClipTextModel::from_tensors(parts.text_encoder.0, text_encoder_weights.clone(), dtype, device)?;
        usage.warn_if_unused("text encoder", &source);
        let (second, text_encoder_2_weights) = match parts.second {
            Some((tokenizer, config, tensors)) => {
                let tensors = Arc::new(tensors);
                let (encoder, usage) = ClipTextModel::from_tensors(config, tensors.clone(), dtype, device)?;
                usage.warn_if_unused("second text encoder", &source);
                (Some(SecondTextEncoder { tokenizer: Arc::new(tokenizer), encoder: Arc::new(encoder) }), Some(tensors))
            }
            None => (None, None),
        };
        let unet_weights = Arc::new(parts.unet.1);
        let (unet, usage) = UNet2DConditionModel::from_tensors(parts.unet.0, unet_weights.clone(), dtype, device)?;
        usage.warn_if_unused("UNet", &source);
        let vae_weights = Arc::new(parts.vae.1);
        let (vae, usage) = AutoencoderKl::from_tensors(parts.vae.0, vae_weights.clone(), dtype, device)?;
        usage.warn_if_unused("VAE", &source);
        let family = if second.is_some() { Family::Sdxl } else { Family::Sd };
        let force_zeros = family == Family::Sdxl && parts.force_zeros_for_empty_prompt.unwrap_or(true);
        Ok(SdModel {
            id: parts.id,
            dir: source,
            family,
            tokenizer: Arc::new(parts.tokenizer),
            text_encoder: Arc::new(text_encoder),
            second,
            unet: Arc::new(unet),
            vae: Arc::new(vae),
            scheduler: parts.scheduler,
            force_zeros_for_empty_prompt: force_zeros,
            device: device.clone(),
            dtype,
            weights: NetworkWeights {
                unet: unet_weights,
                vae: vae_weights,
                text_encoder: text_encoder_weights,
                text_encoder_2: text_encoder_2_weights,
            },
        })
    }

    /// This model with another VAE (A1111's `sd_vae`): everything else is shared.
    pub fn with_vae(&self, vae: Arc<AutoencoderKl>, weights: Arc<TensorMap>) -> SdModel {
        let mut out = self.clone();
        out.vae = vae;
        out.weights.vae = weights;
        out
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

/// The tensors of a diffusers/transformers component folder (`model.safetensors` or
/// `diffusion_pytorch_model[.fp16].safetensors`, or shards).
fn load_folder_tensors(dir: &Path, dtype: DType, device: &Device) -> Result<TensorMap, ModelError> {
    let preferred = ["model.safetensors", "diffusion_pytorch_model.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
    if let Some(file) = preferred.iter().map(|name| dir.join(name)).find(|p| p.is_file()) {
        return load_tensors(&[file], dtype, device);
    }
    let files = crate::backend::models::unet::weights::weight_files(dir)?;
    load_tensors(&files, dtype, device)
}

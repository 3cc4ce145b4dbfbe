//! Single-file A1111/LDM checkpoints (`.safetensors`): SD 1.x, SD 2.x, SDXL base, and their
//! inpainting variants, converted to our module names at load.
//!
//! The family and every dimension come from the tensors ([`detect`], [`configs`]); what shapes
//! cannot tell comes from the sidecar `.yaml` A1111 reads (`model.yaml` beside
//! `model.safetensors`), explicit [`CheckpointOptions`] overrides, or the family's defaults
//! ([`defaults`]).
//!
//! **Prediction type**, first rule that answers:
//! 1. the `prediction` override;
//! 2. the sidecar `.yaml`'s `model.params.parameterization` (`"v"` = v-prediction);
//! 3. a `v_pred` tensor in the file (the marker A1111 and ComfyUI honour; `ztsnr` beside it
//!    turns on zero-terminal-SNR betas);
//! 4. SD 2.x only: A1111's probe — run the UNet once at t = 999 on a latent of 0.5s with a
//!    context of 0.5s; an epsilon model predicts noise close to its input, a v model predicts
//!    roughly its negative, so `mean(out - x) < -1` means v (768-v) and anything else epsilon
//!    (512-base);
//! 5. epsilon.
//!
//! Pickle files (`.ckpt`, `.pt`, ...) are refused: unpickling runs code from the file.

pub mod clip_keys;
pub mod configs;
pub mod convert;
pub mod defaults;
pub mod detect;
pub mod header;
pub mod sidecar;
pub mod tokenizers;
pub mod unet_keys;
pub mod vae_file;
pub mod vae_keys;

#[cfg(test)]
pub(crate) mod ldm_writer;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::backend::models::error::ModelError;
use crate::backend::models::unet::UNet2DConditionModel;
use crate::backend::pipeline::model::{compute_dtype, PipelineParts, SdModel};
use crate::backend::samplers::SchedulerConfig;
use configs::{clip_config, unet_config, vae_config, ClipKind, UnetHeads, UnetSettings};
use convert::{Component, ConversionPlan};
use detect::{detect, CheckpointFamily};
use header::CheckpointHeader;
use sidecar::{SidecarConfig, SidecarHints};
use tokenizers::{PadStyle, TokenizerSource};
use unet_keys::UnetKeyMap;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("'{path}' is a pickle checkpoint (.ckpt/.pt): loading one can run arbitrary code, so it is refused; convert it to .safetensors (for example with A1111's or diffusers' converter) and load that")]
    Pickle { path: PathBuf },
    #[error("cannot read '{path}' as safetensors: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("not a Stable Diffusion checkpoint: {reason}")]
    NotACheckpoint { reason: String },
    #[error("unsupported checkpoint: {0}")]
    Unsupported(String),
    #[error("cannot derive the model config: {0}")]
    Config(String),
    #[error("no tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl CheckpointError {
    pub fn config(reason: impl Into<String>) -> Self {
        CheckpointError::Config(reason.into())
    }
}

/// What shapes cannot tell, when the sidecar `.yaml` and the family defaults are not right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadOverrides {
    /// Attention heads per UNet block.
    pub unet: Option<Vec<usize>>,
    pub text_encoder: Option<usize>,
    pub text_encoder_2: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub tokenizer: TokenizerSource,
    /// Force epsilon (`Some(false)`) or v-prediction (`Some(true)`).
    pub v_prediction: Option<bool>,
    pub heads: HeadOverrides,
    /// An LDM config to use instead of the `.yaml` beside the file.
    pub config_yaml: Option<PathBuf>,
}

/// How the prediction type was decided (logged, and reported by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionRule {
    Override,
    Sidecar,
    VPredKey,
    Sd2Probe,
    Default,
}

/// What was found in a checkpoint besides the model.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub family: CheckpointFamily,
    pub inpainting: bool,
    pub v_prediction: bool,
    pub prediction_rule: PredictionRule,
    pub sidecar: Option<PathBuf>,
    /// Checkpoint tensors no network uses (EMA weights, training buffers, ...).
    pub ignored_tensors: usize,
}

/// Load a single-file checkpoint as a pipeline named `id`.
pub fn load_checkpoint(id: &str, path: &Path, options: &CheckpointOptions, device: &Device) -> Result<(SdModel, CheckpointInfo), CheckpointError> {
    let started = std::time::Instant::now();
    let header = CheckpointHeader::read(path)?;
    let detected = detect(&header)?;
    let sidecar_path = options.config_yaml.clone().or_else(|| SidecarConfig::beside(path));
    let hints = match &sidecar_path {
        Some(p) => SidecarConfig::read(p).map_err(|e| CheckpointError::config(format!("{}: {e}", p.display())))?.hints(),
        None => SidecarHints::default(),
    };
    let (v_prediction, rule) = match (options.v_prediction, hints.v_prediction, header.contains("v_pred")) {
        (Some(v), _, _) => (v, PredictionRule::Override),
        (None, Some(v), _) => (v, PredictionRule::Sidecar),
        (None, None, true) => (true, PredictionRule::VPredKey),
        // Assumed until the probe runs on the built UNet. SD 2 inpainting is epsilon (A1111's
        // v2-inpainting config), and the probe's 4-channel input does not fit it anyway.
        (None, None, false) if detected.family == CheckpointFamily::Sd2 && !detected.inpainting => (true, PredictionRule::Sd2Probe),
        _ => (false, PredictionRule::Default),
    };

    let dtype = compute_dtype(device);
    let pooled_dim = header.dim("conditioner.embedders.1.model.text_projection", 1);
    let heads = match (&options.heads.unet, hints.unet_num_heads, hints.unet_head_channels) {
        (Some(per_block), _, _) => UnetHeads::PerBlock(per_block.clone()),
        (None, Some(n), _) => UnetHeads::Fixed(n),
        (None, None, Some(width)) => UnetHeads::Channels(width),
        _ => UnetHeads::family_default(detected.family),
    };
    let mut settings = UnetSettings {
        family: detected.family,
        heads,
        sample_size: defaults::unet_sample_size(detected.family, v_prediction),
        upcast_attention: defaults::unet_upcast_attention(detected.family),
        pooled_dim,
    };
    let unet_cfg = unet_config(&header, &settings)?;
    let unet_map = UnetKeyMap::new(&unet_cfg.layout()?);
    let plan = ConversionPlan::new(&header, &detected, &unet_map);
    if !plan.unmapped_unet.is_empty() {
        return Err(CheckpointError::Unsupported(format!(
            "{} UNet tensors have no place in the derived layout (first: {}); the UNet architecture is not one we build",
            plan.unmapped_unet.len(),
            plan.unmapped_unet[0]
        )));
    }
    let mut tensors = plan.execute(path, dtype, device)?;
    let mut take = |component| tensors.remove(&component).unwrap_or_default();
    let unet_tensors = take(Component::Unet);
    let vae_tensors = take(Component::Vae);
    let te_tensors = take(Component::TextEncoder);
    let te2_tensors = take(Component::TextEncoder2);

    let first_kind = match detected.family {
        CheckpointFamily::Sd2 => ClipKind::OpenClip { with_projection: false },
        _ => ClipKind::OpenAi,
    };
    let text_encoder = (clip_config(&te_tensors, first_kind, options.heads.text_encoder)?, te_tensors);
    let second = if detected.family == CheckpointFamily::Sdxl {
        let config = clip_config(&te2_tensors, ClipKind::OpenClip { with_projection: true }, options.heads.text_encoder_2)?;
        Some((options.tokenizer.load(PadStyle::OpenClip)?, config, te2_tensors))
    } else {
        None
    };
    let first_pad = if detected.family == CheckpointFamily::Sd2 { PadStyle::OpenClip } else { PadStyle::OpenAiClip };
    let scaling = hints.scale_factor.unwrap_or_else(|| defaults::vae_scaling_factor(detected.family));
    let zero_snr = header.contains("ztsnr");
    let parts = PipelineParts {
        id: id.to_string(),
        source: path.to_path_buf(),
        tokenizer: options.tokenizer.load(first_pad)?,
        text_encoder,
        second,
        unet: (unet_cfg, unet_tensors),
        vae: (vae_config(&vae_tensors, scaling)?, vae_tensors),
        scheduler: scheduler(detected.family, v_prediction, zero_snr)?,
        force_zeros_for_empty_prompt: None,
    };
    let mut model = SdModel::from_parts(parts, device)?;

    let (v_prediction, rule) = if rule == PredictionRule::Sd2Probe {
        let v = probe_v_prediction(&model.unet)?;
        if !v {
            // 512-base: epsilon, and the sample size that goes with it.
            settings.sample_size = defaults::unet_sample_size(detected.family, false);
            let rebuilt = unet_config(&header, &settings)?;
            let (unet, _) = UNet2DConditionModel::from_tensors(rebuilt, model.weights.unet.clone(), dtype, device)?;
            model.unet = Arc::new(unet);
            model.scheduler = scheduler(detected.family, false, zero_snr)?;
        }
        (v, rule)
    } else {
        (v_prediction, rule)
    };
    let info = CheckpointInfo {
        family: detected.family,
        inpainting: detected.inpainting,
        v_prediction,
        prediction_rule: rule,
        sidecar: sidecar_path,
        ignored_tensors: plan.ignored.len(),
    };
    tracing::info!(
        checkpoint = %path.display(),
        family = detected.family.label(),
        inpainting = detected.inpainting,
        v_prediction,
        prediction_rule = ?rule,
        ignored_tensors = info.ignored_tensors,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "single-file checkpoint loaded"
    );
    Ok((model, info))
}

fn scheduler(family: CheckpointFamily, v_prediction: bool, zero_snr: bool) -> Result<SchedulerConfig, CheckpointError> {
    SchedulerConfig::from_json_str(&defaults::scheduler_config_json(family, v_prediction, zero_snr))
        .map_err(|e| CheckpointError::config(format!("scheduler: {e}")))
}

/// A1111's `is_using_v_parameterization_for_sd2`: one UNet call at t = 999 on an all-0.5
/// latent with an all-0.5 two-token context; `mean(out - x) < -1` means v-prediction.
fn probe_v_prediction(unet: &UNet2DConditionModel) -> Result<bool, CheckpointError> {
    let config = unet.config();
    let levels = config.block_out_channels.len().max(1);
    let side = 8usize.max(1 << (levels - 1));
    let device = unet.device().clone();
    let context_dim = config.layout()?.mid.attention.cross_attention_dim;
    let x = (Tensor::ones((1, config.in_channels, side, side), candle_core::DType::F32, &device)? * 0.5)?;
    let context = (Tensor::ones((1, 2, context_dim), candle_core::DType::F32, &device)? * 0.5)?;
    let out = unet.forward(&x, 999.0, &context, None)?;
    let mean = (out - &x)?.mean_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
    tracing::debug!(mean, "SD 2 v-prediction probe");
    Ok(mean < -1.0)
}

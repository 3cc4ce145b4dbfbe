//! Network configs derived from tensor shapes, as diffusers' single-file loader derives them
//! from the LDM config: channels, levels, resnets per level, which levels attend, transformer
//! depth, projection kind, cross-attention width, SDXL's added-embedding sizes. What shapes
//! cannot tell (attention heads, sample size, scaling factor) comes from [`super::defaults`],
//! the sidecar `.yaml`, or explicit overrides.

use candle_core::Tensor;

use super::convert::UNET_PREFIX;
use super::defaults::{CLIP_HEAD_DIM, SD1_UNET_HEADS, UNET_HEAD_CHANNELS};
use super::detect::CheckpointFamily;
use super::header::CheckpointHeader;
use super::CheckpointError;
use crate::backend::models::clip_text::{ClipActivation, ClipTextConfig};
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::unet::UNetConfig;
use crate::backend::models::vae::VaeConfig;

/// How many attention heads the UNet's blocks have, when shapes cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnetHeads {
    /// Explicit heads per block (an override).
    PerBlock(Vec<usize>),
    /// The same number of heads in every block (LDM `num_heads`).
    Fixed(usize),
    /// Heads = block channels / this (LDM `num_head_channels`).
    Channels(usize),
}

impl UnetHeads {
    pub fn family_default(family: CheckpointFamily) -> Self {
        match family {
            CheckpointFamily::Sd1 => UnetHeads::Fixed(SD1_UNET_HEADS),
            CheckpointFamily::Sd2 | CheckpointFamily::Sdxl => UnetHeads::Channels(UNET_HEAD_CHANNELS),
        }
    }

    fn resolve(&self, channels: &[usize]) -> Result<Vec<usize>, CheckpointError> {
        match self {
            UnetHeads::PerBlock(heads) if heads.len() == channels.len() => Ok(heads.clone()),
            UnetHeads::PerBlock(heads) => Err(CheckpointError::config(format!(
                "{} UNet head counts given for {} blocks",
                heads.len(),
                channels.len()
            ))),
            UnetHeads::Fixed(n) => Ok(vec![*n; channels.len()]),
            UnetHeads::Channels(width) => channels
                .iter()
                .map(|&c| {
                    (c % width == 0 && c >= *width).then(|| c / width).ok_or_else(|| {
                        CheckpointError::config(format!(
                            "{c} UNet channels are not a multiple of {width}-wide heads; give the heads in a sidecar .yaml (num_heads) or as an override"
                        ))
                    })
                })
                .collect(),
        }
    }
}

/// What the UNet config needs besides the shapes.
pub struct UnetSettings {
    pub family: CheckpointFamily,
    pub heads: UnetHeads,
    pub sample_size: usize,
    pub upcast_attention: bool,
    /// SDXL: the pooled text embedding width (text_encoder_2's projection), to split the added
    /// embedding's input into text and time parts.
    pub pooled_dim: Option<usize>,
}

/// One resolution level of the down path, read from `input_blocks`.
#[derive(Debug, Default)]
struct Level {
    resnets: usize,
    channels: usize,
    attention: bool,
    depth: usize,
}

pub fn unet_config(header: &CheckpointHeader, settings: &UnetSettings) -> Result<UNetConfig, CheckpointError> {
    let key = |rest: &str| format!("{UNET_PREFIX}{rest}");
    let need = |rest: &str| header.shape(&key(rest)).ok_or_else(|| CheckpointError::config(format!("the UNet has no {rest}")));
    let conv_in = need("input_blocks.0.0.weight")?.to_vec();
    let conv_out = need("out.2.weight")?.to_vec();
    let time_embed_dim = need("time_embed.0.weight")?[0];
    if conv_in.len() != 4 || conv_out.len() != 4 {
        return Err(CheckpointError::config("conv_in/conv_out are not 2-D convolutions"));
    }

    let mut levels: Vec<Level> = vec![Level::default()];
    let mut linear_projection = None;
    let mut cross_attention_dim = None;
    for index in header.indices(&key("input_blocks.")).into_iter().filter(|&i| i > 0) {
        if header.contains(&key(&format!("input_blocks.{index}.0.op.weight"))) {
            levels.push(Level::default());
            continue;
        }
        let level = levels.last_mut().ok_or_else(|| CheckpointError::config("no UNet levels"))?;
        let channels = need(&format!("input_blocks.{index}.0.out_layers.3.weight"))?[0];
        if level.resnets > 0 && level.channels != channels {
            return Err(CheckpointError::config(format!("input block {index} changes channels inside a level")));
        }
        level.channels = channels;
        level.resnets += 1;
        if let Some(proj_in) = header.shape(&key(&format!("input_blocks.{index}.1.proj_in.weight"))) {
            level.attention = true;
            level.depth = header.indices(&key(&format!("input_blocks.{index}.1.transformer_blocks."))).len();
            linear_projection.get_or_insert(proj_in.len() == 2);
            if cross_attention_dim.is_none() {
                cross_attention_dim = header.dim(&key(&format!("input_blocks.{index}.1.transformer_blocks.0.attn2.to_k.weight")), 1);
            }
        }
    }
    if levels.iter().any(|l| l.resnets == 0) {
        return Err(CheckpointError::config("a UNet level without resnets"));
    }
    let mid_depth = header.indices(&key("middle_block.1.transformer_blocks.")).len();
    if mid_depth == 0 {
        return Err(CheckpointError::config("the UNet mid block has no transformer"));
    }
    let cross_attention_dim = cross_attention_dim
        .or_else(|| header.dim(&key("middle_block.1.transformer_blocks.0.attn2.to_k.weight"), 1))
        .ok_or_else(|| CheckpointError::config("no cross-attention found in the UNet"))?;
    let linear_projection = linear_projection.unwrap_or_else(|| header.shape(&key("middle_block.1.proj_in.weight")).is_some_and(|s| s.len() == 2));

    // diffusers' mid block takes the deepest level's transformer depth; a level without
    // attention carries the mid block's depth there (its own value is unused).
    let last = levels.len() - 1;
    let mut depths: Vec<usize> = levels.iter().map(|l| if l.attention { l.depth } else { 1 }).collect();
    if levels[last].attention {
        if depths[last] != mid_depth {
            return Err(CheckpointError::config(format!(
                "mid block depth {mid_depth} differs from the deepest level's {}",
                depths[last]
            )));
        }
    } else {
        depths[last] = mid_depth;
    }

    // Up blocks mirror the down levels; check the checkpoint agrees before trusting it.
    let mut output = 0;
    for (b, level) in levels.iter().rev().enumerate() {
        let attention = header.contains(&key(&format!("output_blocks.{output}.1.proj_in.weight")));
        if attention != level.attention {
            return Err(CheckpointError::config(format!("up block {b} does not mirror its down level's attention")));
        }
        output += level.resnets + 1;
    }
    if header.indices(&key("output_blocks.")).len() != output {
        return Err(CheckpointError::config("output blocks do not mirror the input blocks"));
    }

    let channels: Vec<usize> = levels.iter().map(|l| l.channels).collect();
    let heads = settings.heads.resolve(&channels)?;
    let resnets: Vec<usize> = levels.iter().map(|l| l.resnets).collect();
    let down_types: Vec<&str> = levels.iter().map(|l| if l.attention { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up_types: Vec<&str> = levels.iter().rev().map(|l| if l.attention { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect();
    let mut config = serde_json::json!({
        "in_channels": conv_in[1],
        "out_channels": conv_out[0],
        "conv_in_kernel": conv_in[2],
        "conv_out_kernel": conv_out[2],
        "block_out_channels": channels,
        "down_block_types": down_types,
        "up_block_types": up_types,
        "layers_per_block": if resnets.iter().all(|&r| r == resnets[0]) { serde_json::json!(resnets[0]) } else { serde_json::json!(resnets) },
        "transformer_layers_per_block": if depths.iter().all(|&d| d == 1) { serde_json::json!(1) } else { serde_json::json!(depths) },
        "attention_head_dim": heads,
        "cross_attention_dim": cross_attention_dim,
        "use_linear_projection": linear_projection,
        "upcast_attention": settings.upcast_attention,
        "sample_size": settings.sample_size,
    });
    if time_embed_dim != channels[0] * 4 {
        config["time_embedding_dim"] = time_embed_dim.into();
    }
    if let Some(label_in) = header.dim(&key("label_emb.0.0.weight"), 1) {
        let pooled = settings.pooled_dim.ok_or_else(|| CheckpointError::config("the UNet takes added embeddings but there is no pooled text encoder"))?;
        let time_part = label_in.checked_sub(pooled).filter(|t| t % 6 == 0 && *t > 0).ok_or_else(|| {
            CheckpointError::config(format!("added-embedding input {label_in} is not pooled {pooled} + 6 time ids"))
        })?;
        config["addition_embed_type"] = "text_time".into();
        config["addition_time_embed_dim"] = (time_part / 6).into();
        config["projection_class_embeddings_input_dim"] = label_in.into();
    }
    UNetConfig::from_json(&config.to_string()).map_err(|e| CheckpointError::config(e.to_string()))
}

/// Which CLIP a text encoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKind {
    /// OpenAI CLIP (quick GELU), no projection used.
    OpenAi,
    /// OpenCLIP (exact GELU); `with_projection` for SDXL's second encoder.
    OpenClip { with_projection: bool },
}

/// A transformers CLIP text config from converted tensors. `heads` overrides the 64-wide rule.
pub fn clip_config(tensors: &TensorMap, kind: ClipKind, heads: Option<usize>) -> Result<ClipTextConfig, CheckpointError> {
    let shape = |name: &str| tensors.get(name).map(Tensor::dims).ok_or_else(|| CheckpointError::config(format!("the text encoder has no {name}")));
    let token = shape("text_model.embeddings.token_embedding.weight")?;
    let (vocab_size, hidden_size) = (token[0], token[1]);
    let max_position_embeddings = shape("text_model.embeddings.position_embedding.weight")?[0];
    let intermediate_size = shape("text_model.encoder.layers.0.mlp.fc1.weight")?[0];
    let layers = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("text_model.encoder.layers.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let heads = match heads {
        Some(h) => h,
        None if hidden_size % CLIP_HEAD_DIM == 0 && hidden_size >= CLIP_HEAD_DIM => hidden_size / CLIP_HEAD_DIM,
        None => {
            return Err(CheckpointError::config(format!(
                "text encoder width {hidden_size} is not a multiple of {CLIP_HEAD_DIM}-wide heads; give its head count as an override"
            )))
        }
    };
    if heads == 0 || hidden_size % heads != 0 {
        return Err(CheckpointError::config(format!("{heads} heads do not divide text encoder width {hidden_size}")));
    }
    let (hidden_act, projection) = match kind {
        ClipKind::OpenAi => (ClipActivation::QuickGelu, None),
        ClipKind::OpenClip { with_projection } => {
            let projection = if with_projection { Some(shape("text_projection.weight")?[0]) } else { None };
            (ClipActivation::Gelu, projection)
        }
    };
    Ok(ClipTextConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        hidden_act,
        layer_norm_eps: 1e-5,
        max_position_embeddings,
        projection_dim: projection,
        declares_projection: Some(projection.is_some()),
        stored_dtype: None,
    })
}

/// An AutoencoderKL config from converted (diffusers-named) tensors.
pub fn vae_config(tensors: &TensorMap, scaling_factor: f64) -> Result<VaeConfig, CheckpointError> {
    let shape = |name: &str| tensors.get(name).map(Tensor::dims).ok_or_else(|| CheckpointError::config(format!("the VAE has no {name}")));
    let count = |prefix: &str| {
        tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    };
    let levels = count("encoder.down_blocks.");
    if levels == 0 {
        return Err(CheckpointError::config("the checkpoint has no VAE encoder"));
    }
    let channels = (0..levels)
        .map(|i| shape(&format!("encoder.down_blocks.{i}.resnets.0.conv2.weight")).map(|s| s[0]))
        .collect::<Result<Vec<_>, _>>()?;
    let config = serde_json::json!({
        "in_channels": shape("encoder.conv_in.weight")?[1],
        "out_channels": shape("decoder.conv_out.weight")?[0],
        "block_out_channels": channels,
        "layers_per_block": count("encoder.down_blocks.0.resnets."),
        "latent_channels": shape("decoder.conv_in.weight")?[1],
        "scaling_factor": scaling_factor,
        "use_quant_conv": tensors.contains_key("quant_conv.weight"),
        "use_post_quant_conv": tensors.contains_key("post_quant_conv.weight"),
        "mid_block_add_attention": tensors.contains_key("encoder.mid_block.attentions.0.to_q.weight"),
    });
    let config: VaeConfig = serde_json::from_value(config).map_err(|e| CheckpointError::config(e.to_string()))?;
    config.validate().map_err(CheckpointError::config)?;
    Ok(config)
}

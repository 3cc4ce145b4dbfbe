//! diffusers' `unet/config.json` for `UNet2DConditionModel`.
//!
//! Defaults are diffusers' constructor defaults, so a config that omits a key behaves as it
//! does in diffusers. The per-block layout derived from it lives in `layout.rs`.

use serde::Deserialize;

use crate::backend::models::error::ModelError;

/// A setting given either once for all blocks or once per down block (diffusers accepts both).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    /// One value per down block, or an error naming `key` when a list has the wrong length.
    pub(super) fn per_block(&self, blocks: usize, key: &str) -> Result<Vec<T>, ModelError> {
        match self {
            Self::All(value) => Ok(vec![*value; blocks]),
            Self::Each(values) if values.len() == blocks => Ok(values.clone()),
            Self::Each(values) => Err(ModelError::unsupported(format!(
                "{key} has {} entries but there are {blocks} down blocks",
                values.len()
            ))),
        }
    }
}

/// The keys of `unet/config.json` this port reads (unknown keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_latent_channels")]
    pub in_channels: usize,
    #[serde(default = "default_latent_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_false_per_block")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Nested per-layer lists in diffusers; only `null` is supported.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Diffusers quirk: when `num_attention_heads` is null this is the NUMBER OF HEADS.
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// SDXL base writes `null` here; diffusers treats that as false.
    #[serde(default, deserialize_with = "null_as_false")]
    pub upcast_attention: bool,
    #[serde(default = "default_attention_type")]
    pub attention_type: String,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "default_resnet_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "default_time_embedding_type")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "default_conv_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_conv_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// The dtype the checkpoint was saved in (older diffusers write `torch_dtype`, newer `dtype`).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
}

fn default_latent_channels() -> usize {
    4
}
fn default_true() -> bool {
    true
}
fn default_down_block_types() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid_block_type() -> Option<String> {
    Some(MID_CROSS_ATTN.to_string())
}
fn default_up_block_types() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_false_per_block() -> PerBlock<bool> {
    PerBlock::All(false)
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::All(2)
}
fn default_one() -> usize {
    1
}
fn default_one_f64() -> f64 {
    1.0
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::All(1280)
}
fn default_transformer_layers() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_attention_head_dim() -> PerBlock<usize> {
    PerBlock::All(8)
}
fn default_attention_type() -> String {
    "default".to_string()
}
fn default_resnet_time_scale_shift() -> String {
    "default".to_string()
}
fn default_time_embedding_type() -> String {
    "positional".to_string()
}
fn null_as_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

fn default_conv_kernel() -> usize {
    3
}

pub(super) const MID_CROSS_ATTN: &str = "UNetMidBlock2DCrossAttn";

impl UNetConfig {
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        serde_json::from_str(text).map_err(|e| ModelError::json("unet/config.json", e))
    }

    /// Heads per down block, applying diffusers' `num_attention_heads or attention_head_dim`.
    pub fn heads_per_block(&self) -> Result<Vec<usize>, ModelError> {
        let blocks = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(heads) => heads.per_block(blocks, "num_attention_heads"),
            None => self
                .attention_head_dim
                .per_block(blocks, "attention_head_dim"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_attention_heads_wins_over_attention_head_dim() {
        let config = UNetConfig::from_json(
            r#"{"block_out_channels":[32,64],"attention_head_dim":[2,4],"num_attention_heads":16,
                "down_block_types":["CrossAttnDownBlock2D","DownBlock2D"],
                "up_block_types":["UpBlock2D","CrossAttnUpBlock2D"]}"#,
        )
        .unwrap();
        assert_eq!(config.heads_per_block().unwrap(), vec![16, 16]);
    }

    #[test]
    fn dtype_keys_are_accepted() {
        let config = UNetConfig::from_json(r#"{"torch_dtype":"float16"}"#).unwrap();
        assert_eq!(config.torch_dtype.as_deref(), Some("float16"));
        let config = UNetConfig::from_json(r#"{"dtype":"bfloat16"}"#).unwrap();
        assert_eq!(config.dtype.as_deref(), Some("bfloat16"));
        // Defaults are real SD 1.5's.
        let layout = config.layout().unwrap();
        assert_eq!(layout.down.len(), 4);
        assert_eq!(layout.time_embed_dim, 1280);
    }
}

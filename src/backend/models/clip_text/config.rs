//! `config.json` of a transformers CLIP text model, validated.

use std::path::Path;

use candle_core::{Result, Tensor};
use serde::Deserialize;

use crate::backend::models::error::{read_json, ModelError};

/// The MLP activations CLIP text models use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (SD 1.x, SDXL `text_encoder`).
    QuickGelu,
    /// Exact erf GELU: OpenCLIP (SD 2.x, SDXL `text_encoder_2`).
    Gelu,
    /// tanh-approximated GELU (`gelu_new` / `gelu_pytorch_tanh`).
    GeluTanh,
}

impl ClipActivation {
    fn from_config_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
        }
    }
}

/// The fields of `config.json` as written by transformers.
#[derive(Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    projection_dim: Option<usize>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    /// transformers < 4.56 writes `torch_dtype`, later versions `dtype`.
    #[serde(default, alias = "torch_dtype")]
    dtype: Option<String>,
}

// transformers' CLIPTextConfig defaults, for configs that leave these out.
fn default_hidden_act() -> String {
    "quick_gelu".to_owned()
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_max_position_embeddings() -> usize {
    77
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub projection_dim: Option<usize>,
    /// `Some(true)` for `CLIPTextModelWithProjection`, `Some(false)` for `CLIPTextModel`,
    /// `None` when the config does not say (the weights decide then).
    pub declares_projection: Option<bool>,
    /// The dtype the weights were saved in, as the config names it ("float16", ...).
    pub stored_dtype: Option<String>,
}

impl ClipTextConfig {
    pub fn from_file(path: &Path) -> std::result::Result<Self, ModelError> {
        let raw: RawConfig = read_json(path)?;
        let bad = |reason: String| ModelError::bad_config(path, reason);
        let hidden_act = ClipActivation::from_config_name(&raw.hidden_act)
            .ok_or_else(|| bad(format!("unsupported hidden_act {:?}", raw.hidden_act)))?;
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
            return Err(bad(format!("layer_norm_eps {}", raw.layer_norm_eps)));
        }
        if raw.num_hidden_layers == 0 || raw.max_position_embeddings == 0 {
            return Err(bad("zero layers or zero positions".to_owned()));
        }
        let declares_projection = raw.architectures.as_ref().map(|names| {
            names
                .iter()
                .any(|name| name == "CLIPTextModelWithProjection")
        });
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            hidden_act,
            layer_norm_eps: raw.layer_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            projection_dim: raw.projection_dim,
            declares_projection,
            stored_dtype: raw.dtype,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

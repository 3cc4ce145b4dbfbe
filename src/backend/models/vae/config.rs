//! The subset of diffusers' `AutoencoderKL` config that shapes the network, with diffusers'
//! own defaults for absent keys. Unknown keys (`_class_name`, `torch_dtype`, `dtype`,
//! `sample_size`, ...) are ignored on purpose: they do not change the graph.

use std::path::Path;

use serde::Deserialize;

use crate::backend::models::error::ModelError;

/// The only block types an `AutoencoderKL` encoder/decoder is built from.
const DOWN_BLOCK: &str = "DownEncoderBlock2D";
const UP_BLOCK: &str = "UpDecoderBlock2D";

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_image_channels")]
    pub in_channels: usize,
    #[serde(default = "default_image_channels")]
    pub out_channels: usize,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default)]
    pub down_block_types: Option<Vec<String>>,
    #[serde(default)]
    pub up_block_types: Option<Vec<String>>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// SD3/Flux VAEs: latents are `(z - shift_factor) * scaling_factor`. `null` for SD 1.x/SDXL.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Per-channel latent statistics some SDXL derivatives (Playground 2.5) ship instead of a
    /// plain scaling factor.
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    /// The VAE overflows in float16 (SD 1.x/SDXL originals): run it in float32.
    #[serde(default = "default_true")]
    pub force_upcast: bool,
}

fn default_image_channels() -> usize {
    3
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers_per_block() -> usize {
    1
}
fn default_act_fn() -> String {
    "silu".to_owned()
}
fn default_latent_channels() -> usize {
    4
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_true() -> bool {
    true
}

impl VaeConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let config: VaeConfig = serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))?;
        config.validate().map_err(|reason| ModelError::BadConfig {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Rejects configs this implementation would silently build wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_out_channels.is_empty() {
            return Err("block_out_channels is empty".into());
        }
        if self.norm_num_groups == 0 {
            return Err("norm_num_groups is 0".into());
        }
        if let Some(bad) = self
            .block_out_channels
            .iter()
            .find(|c| **c == 0 || **c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "block_out_channels entry {bad} is not a positive multiple of norm_num_groups {}",
                self.norm_num_groups
            ));
        }
        if self.layers_per_block == 0 {
            return Err("layers_per_block is 0".into());
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        if self.act_fn != "silu" {
            return Err(format!(
                "act_fn {:?} is not supported (only \"silu\")",
                self.act_fn
            ));
        }
        check_block_types(
            "down_block_types",
            self.down_block_types.as_deref(),
            DOWN_BLOCK,
            self.block_out_channels.len(),
        )?;
        check_block_types(
            "up_block_types",
            self.up_block_types.as_deref(),
            UP_BLOCK,
            self.block_out_channels.len(),
        )?;
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!(
                "scaling_factor {} is not a positive number",
                self.scaling_factor
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err("shift_factor is not finite".into());
        }
        for (name, stats) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if stats
                .as_ref()
                .is_some_and(|s| s.len() != self.latent_channels)
            {
                return Err(format!(
                    "{name} does not have latent_channels ({}) entries",
                    self.latent_channels
                ));
            }
        }
        Ok(())
    }

    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    pub fn shift_factor(&self) -> Option<f64> {
        self.shift_factor
    }

    /// Image pixels per latent pixel along each axis: every block but the last halves the size.
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn check_block_types(
    key: &str,
    types: Option<&[String]>,
    expected: &str,
    blocks: usize,
) -> Result<(), String> {
    let Some(types) = types else { return Ok(()) };
    if types.len() != blocks {
        return Err(format!(
            "{key} has {} entries but block_out_channels has {blocks}",
            types.len()
        ));
    }
    match types.iter().find(|t| t.as_str() != expected) {
        Some(other) => Err(format!(
            "{key} entry {other:?} is not supported (only {expected:?})"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> VaeConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sd15_style_config_with_dtype_keys() {
        let c = parse(
            r#"{"_class_name":"AutoencoderKL","torch_dtype":"float16","dtype":"float16",
                "block_out_channels":[128,256,512,512],"layers_per_block":2,"latent_channels":4,
                "norm_num_groups":32,"scaling_factor":0.18215,"shift_factor":null,"sample_size":512}"#,
        );
        c.validate().unwrap();
        assert_eq!(c.downscale_factor(), 8);
        assert_eq!(c.shift_factor(), None);
        assert!(
            c.use_quant_conv
                && c.use_post_quant_conv
                && c.mid_block_add_attention
                && c.force_upcast
        );
    }

    #[test]
    fn flux_style_config() {
        let c = parse(
            r#"{"block_out_channels":[128,256,512,512],"latent_channels":16,"scaling_factor":0.3611,
                "shift_factor":0.1159,"use_quant_conv":false,"use_post_quant_conv":false,"force_upcast":true}"#,
        );
        c.validate().unwrap();
        assert_eq!(c.shift_factor(), Some(0.1159));
        assert!(!c.use_quant_conv && !c.use_post_quant_conv);
    }

    #[test]
    fn rejects_what_it_cannot_build() {
        assert!(parse(r#"{"block_out_channels":[]}"#).validate().is_err());
        assert!(parse(r#"{"block_out_channels":[48]}"#).validate().is_err());
        assert!(parse(r#"{"act_fn":"gelu"}"#).validate().is_err());
        assert!(parse(
            r#"{"block_out_channels":[32,64],"down_block_types":["DownEncoderBlock2D"]}"#
        )
        .validate()
        .is_err());
        assert!(parse(r#"{"latents_mean":[0.0,1.0]}"#).validate().is_err());
    }
}

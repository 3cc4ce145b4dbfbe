//! The `.yaml` beside a checkpoint (`model.yaml` next to `model.safetensors`), as A1111 reads
//! it: the original LDM/SGM inference config. We read the few scalar keys that shapes cannot
//! tell: `model.params.parameterization` ("v" for v-prediction), `model.params.scale_factor`,
//! and the UNet's `num_heads` / `num_head_channels`.
//!
//! LDM configs are plain nested mappings of scalars, so a line reader that tracks indentation
//! is enough; flow lists (`[1, 2, 4]`) stay strings, block lists (`- item`) are skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `dotted.key.path` → scalar value (quotes removed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarConfig {
    values: HashMap<String, String>,
    pub path: Option<PathBuf>,
}

/// What the LDM config says about the model, where it says anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarHints {
    /// `parameterization: "v"` → true, `"eps"` → false.
    pub v_prediction: Option<bool>,
    pub scale_factor: Option<f64>,
    /// UNet heads in every block (`num_heads`).
    pub unet_num_heads: Option<usize>,
    /// UNet channels per head (`num_head_channels`; heads = block channels / this).
    pub unet_head_channels: Option<usize>,
}

impl SidecarConfig {
    /// `checkpoint` with its extension replaced by `.yaml`, if that file exists.
    pub fn beside(checkpoint: &Path) -> Option<PathBuf> {
        let path = checkpoint.with_extension("yaml");
        path.is_file().then_some(path)
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let mut config = Self::parse(&std::fs::read_to_string(path)?);
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(text: &str) -> Self {
        let mut values = HashMap::new();
        // (indent, key) of the mappings enclosing the current line.
        let mut stack: Vec<(usize, String)> = Vec::new();
        for raw in text.lines() {
            let line = strip_comment(raw);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('-') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let Some((key, value)) = trimmed.split_once(':') else { continue };
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let key = unquote(key.trim());
            let value = value.trim();
            if value.is_empty() {
                stack.push((indent, key.to_string()));
            } else {
                let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
                values.insert(path.join("."), unquote(value).to_string());
            }
        }
        SidecarConfig { values, path: None }
    }

    pub fn get(&self, dotted: &str) -> Option<&str> {
        self.values.get(dotted).map(String::as_str)
    }

    /// The keys we use, from both LDM (`unet_config`) and SGM (`network_config`) layouts.
    pub fn hints(&self) -> SidecarHints {
        let unet = |key: &str| {
            self.get(&format!("model.params.unet_config.params.{key}"))
                .or_else(|| self.get(&format!("model.params.network_config.params.{key}")))
        };
        // `-1` means "not used" in LDM configs (num_heads: -1 with num_head_channels: 64).
        let positive = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok()).filter(|n| *n > 0).map(|n| n as usize);
        SidecarHints {
            v_prediction: self.get("model.params.parameterization").map(|p| p == "v"),
            scale_factor: self.get("model.params.scale_factor").and_then(|v| v.parse().ok()),
            unet_num_heads: positive(unet("num_heads")),
            unet_head_channels: positive(unet("num_head_channels")),
        }
    }
}

fn strip_comment(line: &str) -> &str {
    // LDM configs never put '#' inside values; a quoted '#' would be cut, which is harmless
    // for the keys we read.
    line.split_once(" #").map(|(before, _)| before).unwrap_or(if line.trim_start().starts_with('#') { "" } else { line })
}

fn unquote(value: &str) -> &str {
    let v = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(quote).and_then(|s| s.strip_suffix(quote)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of Stability's `v2-inference-v.yaml`.
    const V2_INFERENCE_V: &str = r#"model:
  base_learning_rate: 1.0e-4
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    scale_factor: 0.18215 # the VAE's
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        use_checkpoint: True
        num_heads: -1
        num_head_channels: 64 # need to fix for flash-attn
        attention_resolutions: [ 4, 2, 1 ]
        context_dim: 1024
    first_stage_config:
      params:
        ddconfig:
          ch_mult:
          - 1
          - 2
"#;

    #[test]
    fn reads_nested_scalars_of_an_ldm_config() {
        let config = SidecarConfig::parse(V2_INFERENCE_V);
        assert_eq!(config.get("model.params.linear_start"), Some("0.00085"));
        assert_eq!(config.get("model.params.unet_config.params.attention_resolutions"), Some("[ 4, 2, 1 ]"));
        let hints = config.hints();
        assert_eq!(hints.v_prediction, Some(true));
        assert_eq!(hints.scale_factor, Some(0.18215));
        assert_eq!(hints.unet_num_heads, None);
        assert_eq!(hints.unet_head_channels, Some(64));
    }

    #[test]
    fn sd1_config_has_eight_heads_and_eps() {
        let config = SidecarConfig::parse(
            "model:\n  params:\n    parameterization: eps\n    unet_config:\n      params:\n        num_heads: 8\n",
        );
        let hints = config.hints();
        assert_eq!(hints.v_prediction, Some(false));
        assert_eq!(hints.unet_num_heads, Some(8));
    }
}

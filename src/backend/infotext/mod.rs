//! The A1111 "parameters" infotext: built byte-for-byte as A1111 1.10's `create_infotext` builds
//! it, and parsed as its `parse_generation_parameters` parses it. Every face and the PNG/EXIF
//! writer use this one formatter.

mod format;
mod ordered;
mod parse;
mod python_text;

pub use format::format_infotext;
pub use parse::{parse_infotext, InfotextError, ParsedInfotext};
pub use python_text::{json_dumps_str, python_float_repr, python_strip};

use crate::backend::request::RngKind;

/// A variation ("subseed") and how much of it is mixed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariationSeed {
    pub seed: u64,
    /// A1111 `subseed_strength`; 0.0 means no variation and nothing is written.
    pub strength: f64,
}

/// Everything the infotext of one image says. Optional fields are left out when `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfotextFields {
    pub prompt: String,
    /// The `Negative prompt:` line is omitted when this is empty.
    pub negative_prompt: String,
    pub steps: u32,
    /// A1111 sampler display name ("Euler a", "DPM++ 2M", ...).
    pub sampler_name: String,
    /// A1111 schedule label ("Automatic", "Karras", ...).
    pub schedule_label: String,
    pub cfg_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    /// First 10 hex digits of the checkpoint's sha256.
    pub model_hash: Option<String>,
    /// Checkpoint name without extension.
    pub model_name: Option<String>,
    /// Written only when > 1 (1 = last CLIP layer).
    pub clip_skip: u32,
    pub denoising_strength: Option<f64>,
    /// "CPU" for torch's CPU generator; `None` for A1111's default "GPU" (Philox). See [`rng_label`].
    pub rng_label: Option<String>,
    pub variation: Option<VariationSeed>,
    /// A1111's `extra_generation_params`, in insertion order, values already formatted as A1111
    /// would `str()` them (floats through [`python_float_repr`]): "Lora hashes", "Mask blur",
    /// "Hires upscale", ... A key naming one of the fixed slots ("Schedule type", "VAE", "ENSD",
    /// "Tiling", ...) takes that slot's position, as in A1111's dict.
    pub extra: Vec<(String, String)>,
    /// Program version ("v1.10.1"); written last.
    pub version: Option<String>,
}

impl InfotextFields {
    /// Add an extra parameter, or replace the value of one already present (keeping its place).
    pub fn set_extra(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.extra.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.extra.push((key, value)),
        }
    }
}

/// The infotext `RNG` value for a generator: A1111 writes the key only when it is not "GPU".
pub fn rng_label(rng: RngKind) -> Option<String> {
    match rng {
        RngKind::TorchCpu => Some("CPU".to_string()),
        RngKind::Philox => None,
    }
}

#[cfg(test)]
mod tests;

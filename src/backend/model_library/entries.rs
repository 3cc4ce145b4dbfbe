//! What the library lists, in the shapes A1111's listing endpoints need.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::models::hub::ModelFormat;

/// A checkpoint (single file or diffusers folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// A1111's title: `"<relpath> [<sha256[:10]>]"`. Stable for the life of the process.
    pub title: String,
    /// Path relative to the checkpoints folder, with `/` separators (`sub/model.safetensors`).
    pub relpath: String,
    /// `relpath` without extension, `/` and `\` replaced by `_` (A1111's `model_name`).
    pub model_name: String,
    /// Absolute path of the file or folder.
    pub path: PathBuf,
    pub format: ModelFormat,
    /// Full sha256 (of the file; of the UNet weights for a diffusers folder).
    pub sha256: String,
    /// `sha256[:10]`, A1111's short hash (`Model hash` in infotexts).
    pub hash: String,
    /// The `.yaml` beside a single file, if any.
    pub config: Option<PathBuf>,
}

impl CheckpointEntry {
    /// The file name without extension (or the folder name).
    pub fn stem(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// A LoRA file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraEntry {
    /// File stem: the name prompts use (`<lora:name:1>`).
    pub name: String,
    /// `ss_output_name` from its metadata, or the name.
    pub alias: String,
    /// Relative to the LoRA folder.
    pub relpath: String,
    pub path: PathBuf,
    /// The safetensors `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// A standalone VAE file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeEntry {
    /// The file name with extension, as A1111's `sd_vae` names it.
    pub model_name: String,
    pub relpath: String,
    pub path: PathBuf,
}

/// A textual-inversion embedding file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingEntry {
    /// File stem: the word that triggers it in a prompt.
    pub name: String,
    pub relpath: String,
    pub path: PathBuf,
    /// Vectors per token (the first dimension of its tensor).
    pub vectors: usize,
    /// Width of each vector (768 for SD 1 CLIP-L, 1024 SD 2, 768 + 1280 for SDXL's pair).
    pub shape: usize,
    /// Which text encoders it has vectors for: `emb_params`, `clip_l`, `clip_g`.
    pub keys: Vec<String>,
}

//! The Stable Diffusion pipeline as plain functions over tensors: encode text → prepare latents →
//! sampler loop → decode → encode the image file. `SdRunner` plugs it into the engine.

pub mod conditioning;
pub mod denoise;
pub mod generate;
pub mod hires;
pub mod image_tensor;
pub mod inputs;
pub mod job_embeddings;
pub mod latent_upscale;
pub mod latents;
pub mod loading;
pub mod model;
pub mod resident;
pub mod runner;

#[cfg(test)]
mod runner_tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use sha2::{Digest, Sha256};

pub use loading::ModelLoader;
pub use model::{Family, SdModel};
pub use runner::SdRunner;

use crate::backend::checkpoint::tokenizers::TokenizerSource;
use crate::backend::checkpoint::{CheckpointOptions, HeadOverrides};
use crate::backend::model_library::ModelLibrary;
use crate::backend::models::hub::{resolve_model, HubOptions, ModelFormat};
use resident::ResidentModel;

/// What to load and where to run it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--model`: a checkpoint in the models folder (any A1111 alias), a diffusers folder or
    /// `.safetensors` file path, or a Hugging Face repo id.
    pub model: String,
    pub hub: HubOptions,
    pub device: Device,
    /// Most models kept loaded at once when requests switch between them (at least 1).
    pub max_resident_models: usize,
    /// Force epsilon (`Some(false)`) or v-prediction (`Some(true)`) for single-file checkpoints.
    pub v_prediction: Option<bool>,
    /// A folder with the CLIP `vocab.json` + `merges.txt` for single files; `None` = the
    /// `openai/clip-vit-large-patch14` tokenizer from the Hugging Face cache.
    pub tokenizer_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// One resident model, prediction type from the files, tokenizer from the hub cache.
    pub fn new(model: impl Into<String>, hub: HubOptions, device: Device) -> Self {
        LoadOptions { model: model.into(), hub, device, max_resident_models: 1, v_prediction: None, tokenizer_dir: None }
    }

    pub fn loader(&self) -> ModelLoader {
        let tokenizer = match &self.tokenizer_dir {
            Some(dir) => TokenizerSource::Dir(dir.clone()),
            None => TokenizerSource::Hub(self.hub.clone()),
        };
        ModelLoader {
            device: self.device.clone(),
            checkpoint: CheckpointOptions { tokenizer, v_prediction: self.v_prediction, heads: HeadOverrides::default(), config_yaml: None },
        }
    }
}

/// Resolve, load and wrap the default model for the engine; with a `library`, requests can
/// switch to any checkpoint it lists. The error is one sentence that says what to do (it is
/// shown in the log and on `/v1/ready`).
pub fn load_runner(opts: &LoadOptions, library: Option<Arc<ModelLibrary>>) -> Result<SdRunner, String> {
    let loader = opts.loader();
    let from_library = library.as_ref().and_then(|l| l.resolve_checkpoint(&opts.model).ok());
    let (default, format) = match from_library {
        Some(entry) => {
            let model = loader.load(&entry.title, &entry.path, entry.format)?;
            (runner::resident_from_entry(&entry, model), entry.format)
        }
        None => {
            let resolved = resolve_model(&opts.model, &opts.hub).map_err(|e| e.to_string())?;
            let model = loader
                .load(&resolved.id, &resolved.path, resolved.format)
                .map_err(|e| format!("{e}; pass --model PATH to a valid diffusers folder or .safetensors checkpoint"))?;
            let hashed = match resolved.format {
                ModelFormat::SingleFile => Some(resolved.path.clone()),
                ModelFormat::DiffusersFolder => unet_weights_file(&resolved.path.join("unet")),
            };
            let hash = hashed.and_then(|f| short_sha256(&f).ok());
            (ResidentModel::new(resolved.path.clone(), resolved.id.clone(), runner::model_display_name(&resolved.id), hash, model), resolved.format)
        }
    };
    Ok(SdRunner::with_library(default, format, loader, library, opts.max_resident_models))
}

/// The UNet weights file whose hash names the model (A1111 hashes the checkpoint file).
fn unet_weights_file(dir: &Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files.into_iter().next()
}

/// First 10 hex digits of a file's sha256 (A1111's short hash).
pub fn short_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(5).map(|b| format!("{b:02x}")).collect())
}

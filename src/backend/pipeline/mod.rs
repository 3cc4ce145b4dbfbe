//! The Stable Diffusion pipeline as plain functions over tensors: encode text → prepare latents →
//! sampler loop → decode → encode the image file. `SdRunner` plugs it into the engine.

pub mod conditioning;
pub mod denoise;
pub mod generate;
pub mod image_tensor;
pub mod latents;
pub mod model;
pub mod runner;

use std::io::Read;
use std::path::Path;

use candle_core::Device;
use sha2::{Digest, Sha256};

pub use model::{Family, SdModel};
pub use runner::SdRunner;

use crate::backend::models::hub::{resolve_model, HubOptions};

/// What to load and where to run it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--model`: a diffusers folder or a Hugging Face repo id.
    pub model: String,
    pub hub: HubOptions,
    pub device: Device,
}

/// Resolve, load and wrap the model for the engine. The error is one sentence that says what to
/// do (it is shown in the log and on `/v1/ready`).
pub fn load_runner(opts: &LoadOptions) -> Result<SdRunner, String> {
    let resolved = resolve_model(&opts.model, &opts.hub).map_err(|e| e.to_string())?;
    let model = SdModel::load(&resolved.id, &resolved.dir, &opts.device)
        .map_err(|e| format!("could not load model '{}' from {}: {e}; pass --model PATH to a valid diffusers folder", resolved.id, resolved.dir.display()))?;
    let hash = unet_weights_file(&resolved.dir.join("unet")).and_then(|f| short_sha256(&f).ok());
    Ok(SdRunner::new(model, hash))
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

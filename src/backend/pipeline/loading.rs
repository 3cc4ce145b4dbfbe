//! Loading a model however it is stored (diffusers folder or single-file checkpoint) and a
//! standalone VAE for it; errors are one sentence that says what to do.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use super::model::{compute_dtype, SdModel};
use crate::backend::checkpoint::vae_file::load_vae_file;
use crate::backend::checkpoint::{load_checkpoint, CheckpointOptions};
use crate::backend::models::hub::ModelFormat;
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::vae::AutoencoderKl;

/// Where models run and how single files are read.
#[derive(Debug, Clone)]
pub struct ModelLoader {
    pub device: Device,
    pub checkpoint: CheckpointOptions,
}

impl ModelLoader {
    /// Load the model at `path` under the name `id`.
    pub fn load(&self, id: &str, path: &Path, format: ModelFormat) -> Result<SdModel, String> {
        let loaded = match format {
            ModelFormat::DiffusersFolder => SdModel::load(id, path, &self.device).map_err(|e| e.to_string()),
            ModelFormat::SingleFile => load_checkpoint(id, path, &self.checkpoint, &self.device).map(|(model, _)| model).map_err(|e| e.to_string()),
        };
        loaded.map_err(|e| format!("could not load model '{id}' from {}: {e}", path.display()))
    }

    /// A standalone VAE file, built for `model` (its dtype, device and latent scaling).
    pub fn load_vae(&self, path: &Path, model: &SdModel) -> Result<(Arc<AutoencoderKl>, Arc<TensorMap>), String> {
        let dtype = compute_dtype(&self.device);
        let scaling = model.vae.config().scaling_factor();
        let fail = |e: String| format!("could not load VAE {}: {e}", path.display());
        let (config, tensors) = load_vae_file(path, scaling, dtype, &self.device).map_err(|e| fail(e.to_string()))?;
        let tensors = Arc::new(tensors);
        let (vae, usage) = AutoencoderKl::from_tensors(config, tensors.clone(), dtype, &self.device).map_err(|e| fail(e.to_string()))?;
        usage.warn_if_unused("VAE", path);
        Ok((Arc::new(vae), tensors))
    }
}

//! LoRA: low-rank weight updates applied per job.
//!
//! A LoRA file ([`file::LoraFile`], kohya/A1111 or diffusers/PEFT naming, see [`keys`]) is
//! matched against a model's own weight names ([`targets::LoraTargets`]) and merged into a
//! patched copy of the model ([`merge::apply_loras`]): untouched tensors are shared, the base
//! model is never modified, so after the job the base weights are exactly what they were.
//! [`MergedCache`] keeps the patched model of the last LoRA set, so repeating it costs nothing.

pub mod file;
pub mod file_cache;
pub mod keys;
pub mod merge;
pub mod targets;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

pub use file::{LoraFile, LoraModule};
pub use file_cache::LoraFileCache;
pub use merge::{apply_loras, AppliedLora, LoraMatch};
pub use targets::{LoraComponent, LoraTargets, Target};

use crate::backend::models::error::ModelError;
use crate::backend::pipeline::model::SdModel;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("LoRA '{path}' is not a .safetensors file; pickle formats (.pt/.ckpt) can run arbitrary code and are refused")]
    Pickle { path: PathBuf },
    #[error("cannot read LoRA '{path}': {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("LoRA '{path}' does not fit this model: none of its {modules} modules matches a weight (first: '{example}'); is it for another model family?")]
    NothingMatched { path: PathBuf, modules: usize, example: String },
    #[error("cannot apply LoRA: {0}")]
    Apply(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Identity of a LoRA set as applied: the parsed files (the same `Arc`, so a file changed on
/// disk and parsed again is a different set) in order, with their strengths.
#[derive(Debug, Clone)]
pub struct LoraSetKey(Vec<(Arc<LoraFile>, f64, f64)>);

impl LoraSetKey {
    pub fn new(loras: &[AppliedLora]) -> Self {
        LoraSetKey(loras.iter().map(|l| (l.file.clone(), l.unet_strength, l.te_strength)).collect())
    }
}

impl PartialEq for LoraSetKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((a, au, at), (b, bu, bt))| Arc::ptr_eq(a, b) && au == bu && at == bt)
    }
}

/// The patched model of the last LoRA set used with one base model.
#[derive(Default)]
pub struct MergedCache {
    last: Option<(LoraSetKey, Arc<SdModel>, Vec<LoraMatch>)>,
    merges: u64,
}

impl MergedCache {
    /// The patched model for `loras`: the cached one when the set is the same as last time,
    /// else a fresh merge that replaces it.
    pub fn get_or_merge(&mut self, base: &SdModel, targets: &LoraTargets, loras: &[AppliedLora]) -> Result<(Arc<SdModel>, Vec<LoraMatch>), LoraError> {
        let key = LoraSetKey::new(loras);
        if let Some((cached_key, model, matches)) = &self.last {
            if *cached_key == key {
                return Ok((model.clone(), matches.clone()));
            }
        }
        // Drop the previous patched model before building the next one: at most one extra
        // copy of the touched weights is alive at a time.
        self.last = None;
        let (model, matches) = apply_loras(base, targets, loras)?;
        let model = Arc::new(model);
        self.merges += 1;
        self.last = Some((key, model.clone(), matches.clone()));
        Ok((model, matches))
    }

    /// How many merges ran (a repeated set does not merge again).
    pub fn merges(&self) -> u64 {
        self.merges
    }
}

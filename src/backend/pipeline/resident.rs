//! The models kept loaded, most recently used first, at most `capacity` of them. Each keeps
//! what it needs between jobs: its LoRA index, the merged model of its last LoRA set, and the
//! last VAE override built for it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use super::model::SdModel;
use crate::backend::lora::{LoraTargets, MergedCache};
use crate::backend::models::tensor_map::TensorMap;
use crate::backend::models::vae::AutoencoderKl;

/// A VAE file built for one model.
pub struct VaeOverride {
    pub path: PathBuf,
    pub vae: Arc<AutoencoderKl>,
    pub tensors: Arc<TensorMap>,
}

pub struct ResidentModel {
    /// What identifies it: the file or folder it was loaded from.
    pub key: PathBuf,
    /// The name status and errors use (A1111 title for library models, else the id).
    pub title: String,
    /// A1111's `Model:` (checkpoint name without extension).
    pub display_name: String,
    /// A1111's `Model hash:` (first 10 hex digits of the sha256).
    pub hash: Option<String>,
    pub base: Arc<SdModel>,
    /// Built on first LoRA use.
    pub lora_targets: Option<LoraTargets>,
    pub merged: MergedCache,
    pub vae: Option<VaeOverride>,
}

impl ResidentModel {
    pub fn new(key: PathBuf, title: String, display_name: String, hash: Option<String>, base: SdModel) -> Self {
        ResidentModel { key, title, display_name, hash, base: Arc::new(base), lora_targets: None, merged: MergedCache::default(), vae: None }
    }
}

pub struct ResidentModels {
    models: VecDeque<ResidentModel>,
    capacity: usize,
}

impl ResidentModels {
    pub fn new(capacity: usize) -> Self {
        ResidentModels { models: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// The model loaded from `key`, now the most recently used.
    pub fn touch(&mut self, key: &PathBuf) -> Option<&mut ResidentModel> {
        let index = self.models.iter().position(|m| &m.key == key)?;
        let model = self.models.remove(index)?;
        self.models.push_front(model);
        self.models.front_mut()
    }

    /// Make room for one more model (called before loading it, so the evicted model's memory
    /// is free while the next one loads).
    pub fn make_room(&mut self) {
        let mut evicted_any = false;
        while self.models.len() >= self.capacity {
            if let Some(evicted) = self.models.pop_back() {
                tracing::info!(model = %evicted.title, "unloading least recently used model");
                evicted_any = true;
            }
        }
        if evicted_any {
            // The CPU allocator keeps freed memory for reuse (kernels/allocator.rs); a model's
            // gigabytes of weights should go back to the OS instead.
            crate::backend::kernels::release_free_memory();
        }
    }

    /// Add a freshly loaded model as the most recently used.
    pub fn insert(&mut self, model: ResidentModel) {
        self.make_room();
        self.models.push_front(model);
    }

    /// The resident models, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = &ResidentModel> {
        self.models.iter()
    }

    /// Titles, most recently used first.
    pub fn titles(&self) -> Vec<String> {
        self.models.iter().map(|m| m.title.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

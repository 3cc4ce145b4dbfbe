//! Textual-inversion embeddings from the embeddings folder, read as A1111 reads them from a
//! `.safetensors` file: `emb_params` (SD 1/2), `clip_l` + `clip_g` (SDXL), a converted
//! `string_to_param.*`, or a file holding a single tensor (diffusers' `{"<token>": ...}`). Each
//! is `[vectors, width]`, or `[width]` for one vector.
//! A1111's `.pt` embeddings are pickles and are never listed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use super::entries::EmbeddingEntry;
use super::hashing::{HashCache, HashKind};
use super::scan::Found;
use crate::backend::models::tensor_map::open_safetensors;

/// The vectors of one embedding, f32 on the CPU (the prompt encoder moves them).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub name: String,
    /// By text encoder: `clip_l` (SD 1 CLIP-L, SDXL's first encoder), `clip_g` (SDXL's second),
    /// or `emb_params` (whatever single encoder the model has).
    pub vectors: BTreeMap<String, Tensor>,
    /// A1111's `TI hashes` value: the first 12 hex digits of the file's sha256 (A1111's
    /// `Embedding.shorthash` is `hash[0:12]`).
    pub hash: String,
}

impl Embedding {
    /// The vectors for an encoder of `width` channels: the SDXL key whose width matches, else
    /// `emb_params` when its width matches.
    pub fn for_width(&self, width: usize) -> Option<&Tensor> {
        self.vectors.values().find(|t| t.dims().get(1) == Some(&width))
    }
}

/// Which tensors of a file hold the vectors, by the key they are published under.
fn vector_keys(shapes: &[(String, Vec<usize>)]) -> Vec<(String, String)> {
    let find = |key: &str| shapes.iter().find(|(k, _)| k == key).map(|(k, _)| k.clone());
    let mut keys = Vec::new();
    for key in ["clip_l", "clip_g", "emb_params"] {
        if let Some(name) = find(key) {
            keys.push((key.to_string(), name));
        }
    }
    if keys.is_empty() {
        if let Some((name, _)) = shapes.iter().find(|(k, _)| k.starts_with("string_to_param.")) {
            keys.push(("emb_params".to_string(), name.clone()));
        } else if let [(name, shape)] = shapes {
            if matches!(shape.len(), 1 | 2) {
                keys.push(("emb_params".to_string(), name.clone()));
            }
        }
    }
    keys
}

fn shapes_of(found: &Found) -> Option<Vec<(String, Vec<usize>)>> {
    let source = open_safetensors(std::slice::from_ref(&found.path)).ok()?;
    Some(source.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect())
}

/// The listing entry of an embedding file, or `None` (logged) when it holds no vectors.
pub fn entry(found: &Found) -> Option<EmbeddingEntry> {
    let name = found.path.file_stem()?.to_string_lossy().into_owned();
    let shapes = shapes_of(found)?;
    let keys = vector_keys(&shapes);
    // (vectors, width) of each tensor; a 1-D tensor is one vector.
    let dims: Vec<Option<(usize, usize)>> = keys
        .iter()
        .filter_map(|(_, n)| shapes.iter().find(|(k, _)| k == n).map(|(_, s)| s))
        .map(|shape| match shape.as_slice() {
            [width] => Some((1, *width)),
            [vectors, width] => Some((*vectors, *width)),
            _ => None,
        })
        .collect();
    let Some(dims) = dims.into_iter().collect::<Option<Vec<_>>>().filter(|d| !d.is_empty()) else {
        tracing::warn!(path = %found.path.display(), "skipped: not a textual-inversion embedding (no emb_params / clip_l / clip_g)");
        return None;
    };
    Some(EmbeddingEntry {
        name,
        relpath: found.relpath.clone(),
        path: found.path.clone(),
        vectors: dims[0].0,
        shape: dims.iter().map(|d| d.1).sum(),
        keys: keys.into_iter().map(|(k, _)| k).collect(),
    })
}

/// Loaded embeddings by name, cleared on rescan.
#[derive(Default)]
pub struct EmbeddingCache {
    loaded: Mutex<HashMap<String, Arc<Embedding>>>,
}

impl EmbeddingCache {
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Embedding>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get_or_load(&self, entry: &EmbeddingEntry, hashes: &HashCache) -> Option<Arc<Embedding>> {
        if let Some(hit) = self.lock().get(&entry.name) {
            return Some(hit.clone());
        }
        let loaded = match load(entry, hashes) {
            Ok(embedding) => Arc::new(embedding),
            Err(e) => {
                tracing::warn!(embedding = %entry.name, error = %e, "embedding not loaded");
                return None;
            }
        };
        self.lock().insert(entry.name.clone(), loaded.clone());
        Some(loaded)
    }
}

fn load(entry: &EmbeddingEntry, hashes: &HashCache) -> Result<Embedding, String> {
    let source = open_safetensors(std::slice::from_ref(&entry.path)).map_err(|e| e.to_string())?;
    let shapes: Vec<(String, Vec<usize>)> = source.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect();
    let mut vectors = BTreeMap::new();
    for (key, name) in vector_keys(&shapes) {
        let tensor = source.load(&name, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32)).map_err(|e| format!("{name}: {e}"))?;
        vectors.insert(key, tensor);
    }
    let hash = hashes.sha256(&entry.path, HashKind::WholeFile).map_err(|e| e.to_string())?;
    Ok(Embedding { name: entry.name.clone(), vectors, hash: hash[..12].to_string() })
}

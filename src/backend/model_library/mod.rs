//! The models folder (`--models-dir`) in A1111's layout: checkpoints (single files and
//! diffusers folders), LoRAs, VAEs and textual-inversion embeddings, listed for the faces and
//! resolved by the names requests use. Read-only; [`ModelLibrary::refresh`] rescans.
//!
//! Checkpoint titles are A1111's `"relpath [sha256[:10]]"`; the hash is computed once per file
//! version (cached in memory, and on disk when a cache file is configured), so titles are
//! stable for the life of the process. Names are only ever matched against what the scan
//! found inside the folder; with `allow_external_paths` the operator may also let requests
//! name absolute paths of files elsewhere.

pub mod embeddings;
pub mod entries;
pub mod hashing;
pub mod resolve;
pub mod scan;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use embeddings::Embedding;
pub use entries::{CheckpointEntry, EmbeddingEntry, LoraEntry, VaeEntry};
use hashing::{HashCache, HashKind};
use scan::{Found, Walker, CHECKPOINT_DIR, EMBEDDINGS_DIR, LORA_DIRS, VAE_DIR};

use crate::backend::models::hub::ModelFormat;
use crate::backend::models::safetensors_header::read_header;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("models folder '{path}' is not readable: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no checkpoint named '{0}' in the models folder")]
    UnknownCheckpoint(String),
    #[error("no VAE named '{0}' in the models folder's VAE folder")]
    UnknownVae(String),
    #[error("'{0}' is a path; models are named relative to the models folder (paths outside it are not allowed)")]
    PathNotAllowed(String),
    #[error("cannot hash '{path}': {source}")]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct LibraryOptions {
    /// Let requests name absolute paths outside the folder (operator's choice; off by default).
    pub allow_external_paths: bool,
    /// Persist file hashes here (JSON), so restarts do not rehash big checkpoints.
    pub hash_cache_file: Option<PathBuf>,
}

#[derive(Debug, Default, Clone)]
struct Listing {
    checkpoints: Vec<CheckpointEntry>,
    loras: Vec<LoraEntry>,
    vaes: Vec<VaeEntry>,
    embeddings: Vec<EmbeddingEntry>,
    /// Embedding files that are pickles (`.pt`, `.bin`): found, never loaded.
    pickle_embeddings: Vec<PickleEmbedding>,
}

/// A textual-inversion file in a pickle format: listed so that a prompt naming it can be told
/// it was refused, never opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleEmbedding {
    /// File stem, the word a prompt would use.
    pub name: String,
    pub path: PathBuf,
}

pub struct ModelLibrary {
    root: PathBuf,
    options: LibraryOptions,
    hashes: HashCache,
    listing: RwLock<Listing>,
    embeddings: embeddings::EmbeddingCache,
}

impl ModelLibrary {
    /// Open `root` and scan it now.
    pub fn open(root: &Path, options: LibraryOptions) -> Result<Arc<Self>, LibraryError> {
        let library = Self::unscanned(root, options)?;
        library.refresh()?;
        Ok(library)
    }

    /// Open `root` with empty listings: share it with the faces at once and [`Self::refresh`]
    /// later (hashing big checkpoints the first time takes a while).
    pub fn unscanned(root: &Path, options: LibraryOptions) -> Result<Arc<Self>, LibraryError> {
        let root = root.canonicalize().map_err(|source| LibraryError::Root { path: root.to_path_buf(), source })?;
        let hashes = match &options.hash_cache_file {
            Some(file) => HashCache::persistent(file.clone()),
            None => HashCache::in_memory(),
        };
        Ok(Arc::new(ModelLibrary { root, options, hashes, listing: RwLock::new(Listing::default()), embeddings: Default::default() }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether requests may name absolute paths outside the folder (the operator's choice).
    pub fn allows_external_paths(&self) -> bool {
        self.options.allow_external_paths
    }

    /// Rescan every folder (A1111's `refresh-checkpoints`, `refresh-loras`, `refresh-vae`,
    /// `refresh-embeddings` all land here). Unchanged files keep their hashes and titles.
    pub fn refresh(&self) -> Result<(), LibraryError> {
        let started = std::time::Instant::now();
        let walker = Walker::new(&self.root).map_err(|source| LibraryError::Root { path: self.root.clone(), source })?;
        let mut checkpoints = Vec::new();
        let special: Vec<&str> = [CHECKPOINT_DIR, VAE_DIR, EMBEDDINGS_DIR].iter().chain(LORA_DIRS).copied().collect();
        let top = walker.find(&self.root, true, false, &special);
        let nested = walker.find(&self.root.join(CHECKPOINT_DIR), true, true, &[]);
        for found in nested.into_iter().chain(top) {
            match self.checkpoint_entry(&found) {
                Ok(entry) if !checkpoints.iter().any(|e: &CheckpointEntry| e.path == entry.path) => checkpoints.push(entry),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checkpoint skipped"),
            }
        }
        let loras: Vec<LoraEntry> = LORA_DIRS
            .iter()
            .flat_map(|dir| walker.find(&self.root.join(dir), false, true, &[]))
            .map(|found| lora_entry(&found))
            .collect();
        let vaes = walker
            .find(&self.root.join(VAE_DIR), false, true, &[])
            .into_iter()
            .map(|found| VaeEntry {
                model_name: found.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                relpath: found.relpath,
                path: found.path,
            })
            .collect();
        let (embedding_files, pickle_files) = walker.find_with_pickles(&self.root.join(EMBEDDINGS_DIR), false, true, &[]);
        let embeddings = embedding_files.iter().filter_map(embeddings::entry).collect();
        let pickle_embeddings = pickle_files
            .into_iter()
            .filter_map(|found| Some(PickleEmbedding { name: found.path.file_stem()?.to_string_lossy().into_owned(), path: found.path }))
            .collect();
        let listing = Listing { checkpoints, loras, vaes, embeddings, pickle_embeddings };
        tracing::info!(
            root = %self.root.display(),
            checkpoints = listing.checkpoints.len(),
            loras = listing.loras.len(),
            vaes = listing.vaes.len(),
            embeddings = listing.embeddings.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "models folder scanned"
        );
        *self.listing.write().unwrap_or_else(|p| p.into_inner()) = listing;
        self.embeddings.clear();
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Listing> {
        self.listing.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn checkpoints(&self) -> Vec<CheckpointEntry> {
        self.read().checkpoints.clone()
    }

    pub fn loras(&self) -> Vec<LoraEntry> {
        self.read().loras.clone()
    }

    pub fn vaes(&self) -> Vec<VaeEntry> {
        self.read().vaes.clone()
    }

    pub fn embeddings(&self) -> Vec<EmbeddingEntry> {
        self.read().embeddings.clone()
    }

    /// Embedding files refused because they are pickles.
    pub fn pickle_embeddings(&self) -> Vec<PickleEmbedding> {
        self.read().pickle_embeddings.clone()
    }

    /// A checkpoint by any A1111 alias (see [`resolve::find_checkpoint`]); an absolute path
    /// only when the operator allows external paths.
    pub fn resolve_checkpoint(&self, name: &str) -> Result<CheckpointEntry, LibraryError> {
        if let Some(entry) = resolve::find_checkpoint(&self.read().checkpoints, name) {
            return Ok(entry.clone());
        }
        match self.external(name) {
            Some(Ok(path)) => {
                let relpath = path.display().to_string();
                self.checkpoint_entry(&Found { is_diffusers_folder: path.is_dir(), path, relpath })
            }
            Some(Err(e)) => Err(e),
            None => Err(LibraryError::UnknownCheckpoint(name.to_string())),
        }
    }

    /// A LoRA by name, alias or relative path; an absolute path only when allowed.
    pub fn resolve_lora(&self, name: &str) -> Option<LoraEntry> {
        if let Some(entry) = resolve::find_lora(&self.read().loras, name) {
            return Some(entry.clone());
        }
        match self.external(name) {
            Some(Ok(path)) if path.is_file() => {
                let relpath = path.display().to_string();
                Some(lora_entry(&Found { path, relpath, is_diffusers_folder: false }))
            }
            _ => None,
        }
    }

    /// `Ok(None)` for "Automatic"/"None"/empty (the checkpoint's own VAE).
    pub fn resolve_vae(&self, name: &str) -> Result<Option<VaeEntry>, LibraryError> {
        if resolve::is_builtin_vae(name) {
            return Ok(None);
        }
        if let Some(entry) = resolve::find_vae(&self.read().vaes, name) {
            return Ok(Some(entry.clone()));
        }
        match self.external(name) {
            Some(Ok(path)) if path.is_file() => Ok(Some(VaeEntry {
                model_name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                relpath: path.display().to_string(),
                path,
            })),
            Some(Err(e)) => Err(e),
            _ => Err(LibraryError::UnknownVae(name.to_string())),
        }
    }

    /// The vectors of the embedding a prompt word names (file stem in the embeddings folder),
    /// loaded once and cached; `None` when there is no such embedding (or it cannot be read).
    pub fn lookup_embedding(&self, name: &str) -> Option<Arc<Embedding>> {
        let entry = self.read().embeddings.iter().find(|e| e.name == name).cloned()?;
        self.embeddings.get_or_load(&entry, &self.hashes)
    }

    /// A1111's LoRA short hash (first 12 hex digits of the addnet hash), or the trainer's
    /// `sshs_model_hash` when the file carries one.
    pub fn lora_hash(&self, entry: &LoraEntry) -> Option<String> {
        let full = match entry.metadata.get("sshs_model_hash") {
            Some(hash) => hash.clone(),
            None => self.hashes.sha256(&entry.path, HashKind::SafetensorsData).ok()?,
        };
        Some(full.chars().take(12).collect())
    }

    /// A VAE's short hash (first 10 hex digits of the file's sha256), for the infotext.
    pub fn vae_hash(&self, entry: &VaeEntry) -> Option<String> {
        self.hashes.sha256(&entry.path, HashKind::WholeFile).ok().map(|h| h[..10].to_string())
    }

    /// `Some(Ok(path))` when `name` is an existing absolute path and external paths are
    /// allowed, `Some(Err)` when it is path-like but not allowed, `None` otherwise.
    fn external(&self, name: &str) -> Option<Result<PathBuf, LibraryError>> {
        if !resolve::is_path_like(name) {
            return None;
        }
        if !self.options.allow_external_paths {
            return Some(Err(LibraryError::PathNotAllowed(name.to_string())));
        }
        let path = Path::new(name);
        (path.is_absolute() && path.exists()).then(|| Ok(path.to_path_buf()))
    }

    fn checkpoint_entry(&self, found: &Found) -> Result<CheckpointEntry, LibraryError> {
        let (format, hashed) = if found.is_diffusers_folder {
            (ModelFormat::DiffusersFolder, diffusers_hash_file(&found.path).unwrap_or_else(|| found.path.join("model_index.json")))
        } else {
            (ModelFormat::SingleFile, found.path.clone())
        };
        let sha256 = self.hashes.sha256(&hashed, HashKind::WholeFile).map_err(|source| LibraryError::Hash { path: hashed.clone(), source })?;
        let hash = sha256[..10].to_string();
        let model_name = strip_extension(&found.relpath, format).replace(['/', '\\'], "_");
        let config = (format == ModelFormat::SingleFile).then(|| found.path.with_extension("yaml")).filter(|p| p.is_file());
        Ok(CheckpointEntry { title: format!("{} [{hash}]", found.relpath), relpath: found.relpath.clone(), model_name, path: found.path.clone(), format, sha256, hash, config })
    }
}

fn lora_entry(found: &Found) -> LoraEntry {
    let name = found.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let metadata = read_header(&found.path).map(|h| h.metadata).unwrap_or_default();
    let alias = metadata.get("ss_output_name").cloned().unwrap_or_else(|| name.clone());
    LoraEntry { name, alias, relpath: found.relpath.clone(), path: found.path.clone(), metadata }
}

/// A diffusers folder is named by the hash of its UNet weights (A1111 hashes the checkpoint,
/// and the UNet is what makes a checkpoint).
fn diffusers_hash_file(dir: &Path) -> Option<PathBuf> {
    crate::backend::models::unet::weights::weight_files(&dir.join("unet")).ok()?.into_iter().next()
}

fn strip_extension(relpath: &str, format: ModelFormat) -> &str {
    match (format, relpath.rsplit_once('.')) {
        (ModelFormat::SingleFile, Some((stem, ext))) if !ext.contains('/') => stem,
        _ => relpath,
    }
}

//! Walking the models folder in A1111's layout:
//!
//! ```text
//! DIR/                     single files and diffusers folders at the top level
//! DIR/Stable-diffusion/**  checkpoints (A1111's models/Stable-diffusion)
//! DIR/Lora/**, DIR/LyCORIS/**
//! DIR/VAE/**
//! DIR/embeddings/**
//! ```
//!
//! Only `.safetensors` files are listed (pickles are skipped with a warning: they would be
//! refused at load). Nothing outside DIR is listed: every file and folder is canonicalised and
//! a symlink pointing out of DIR is skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Subfolders with a role; not scanned as checkpoint folders at the top level.
pub const CHECKPOINT_DIR: &str = "Stable-diffusion";
pub const LORA_DIRS: &[&str] = &["Lora", "LyCORIS"];
pub const VAE_DIR: &str = "VAE";
pub const EMBEDDINGS_DIR: &str = "embeddings";

const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin"];

/// A file or diffusers folder found under a role folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Canonical absolute path.
    pub path: PathBuf,
    /// Relative to the role folder, `/`-separated.
    pub relpath: String,
    pub is_diffusers_folder: bool,
}

impl Found {
    /// Empty (listed, pickles) lists.
    fn lists() -> (Vec<Found>, Vec<Found>) {
        (Vec::new(), Vec::new())
    }
}

/// The walker's view of the root, canonicalised once.
pub struct Walker {
    root: PathBuf,
}

impl Walker {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Walker { root: root.canonicalize()? })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `path` (resolved through symlinks) lies inside the root.
    pub fn contains(&self, path: &Path) -> Option<PathBuf> {
        let canonical = path.canonicalize().ok()?;
        canonical.starts_with(&self.root).then_some(canonical)
    }

    /// `.safetensors` files (and, with `folders`, diffusers folders) under `dir`, recursively,
    /// sorted by relative path. `skip_top` names subfolders of `dir` not to enter.
    pub fn find(&self, dir: &Path, folders: bool, recursive: bool, skip_top: &[&str]) -> Vec<Found> {
        self.find_with_pickles(dir, folders, recursive, skip_top).0
    }

    /// [`Self::find`], plus the pickle files it skipped (so that a prompt naming one can be told
    /// why nothing happened).
    pub fn find_with_pickles(&self, dir: &Path, folders: bool, recursive: bool, skip_top: &[&str]) -> (Vec<Found>, Vec<Found>) {
        let mut out = Found::lists();
        if self.contains(dir).filter(|d| d.is_dir()).is_none() {
            return out;
        }
        let mut visited = HashSet::new();
        self.walk(dir, dir, folders, recursive, skip_top, &mut visited, &mut out);
        out.0.sort_by(|a, b| a.relpath.cmp(&b.relpath));
        out.1.sort_by(|a, b| a.relpath.cmp(&b.relpath));
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(&self, base: &Path, dir: &Path, folders: bool, recursive: bool, skip_top: &[&str], visited: &mut HashSet<PathBuf>, out: &mut (Vec<Found>, Vec<Found>)) {
        // Visited by canonical path: a symlink loop inside the root is entered once.
        let Ok(canonical) = dir.canonicalize() else { return };
        if !visited.insert(canonical) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            let Some(canonical) = self.contains(&path) else {
                tracing::warn!(path = %path.display(), "skipped: it leads outside the models folder");
                continue;
            };
            let relpath = relative(base, &path);
            if canonical.is_dir() {
                if dir == base && skip_top.contains(&name.as_str()) {
                    continue;
                }
                if folders && canonical.join("model_index.json").is_file() {
                    out.0.push(Found { path: canonical, relpath, is_diffusers_folder: true });
                } else if recursive {
                    self.walk(base, &path, folders, recursive, skip_top, visited, out);
                }
                continue;
            }
            let extension = canonical.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if extension == "safetensors" {
                out.0.push(Found { path: canonical, relpath, is_diffusers_folder: false });
            } else if PICKLE_EXTENSIONS.contains(&extension.as_str()) {
                tracing::warn!(path = %path.display(), "skipped: pickle files are not loaded (convert to .safetensors)");
                out.1.push(Found { path: canonical, relpath, is_diffusers_folder: false });
            }
        }
    }
}

/// `path` relative to `base` with `/` separators (as found, not through symlinks).
fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

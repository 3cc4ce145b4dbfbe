//! Parsed LoRA files, reused while the file on disk is unchanged (same size and mtime).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::file::LoraFile;
use super::LoraError;

struct Cached {
    path: PathBuf,
    size: u64,
    modified: Option<SystemTime>,
    file: Arc<LoraFile>,
}

/// The last `capacity` LoRA files parsed, most recently used first.
pub struct LoraFileCache {
    files: VecDeque<Cached>,
    capacity: usize,
}

impl LoraFileCache {
    pub fn new(capacity: usize) -> Self {
        LoraFileCache { files: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub fn get(&mut self, path: &Path) -> Result<Arc<LoraFile>, LoraError> {
        let meta = std::fs::metadata(path).map_err(|e| LoraError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
        let (size, modified) = (meta.len(), meta.modified().ok());
        if let Some(index) = self.files.iter().position(|c| c.path == path) {
            if let Some(hit) = self.files.remove(index) {
                if hit.size == size && hit.modified == modified {
                    let file = hit.file.clone();
                    self.files.push_front(hit);
                    return Ok(file);
                }
            }
        }
        let file = Arc::new(LoraFile::load(path)?);
        self.files.push_front(Cached { path: path.to_path_buf(), size, modified, file: file.clone() });
        self.files.truncate(self.capacity);
        Ok(file)
    }
}

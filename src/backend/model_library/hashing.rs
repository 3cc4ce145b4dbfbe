//! File hashes as A1111 computes them, each computed once per file version and cached: the
//! checkpoint hash is the sha256 of the whole file (titles show its first 10 hex digits); the
//! LoRA hash is kohya's "addnet" hash, the sha256 of a safetensors file's data after its header
//! (infotexts show its first 12). Optionally persisted as JSON so restarts do not rehash.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::models::safetensors_header::read_header;

/// Which bytes a hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashKind {
    WholeFile,
    /// safetensors tensor data only (kohya's addnet hash, A1111's LoRA hash).
    SafetensorsData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedHash {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// sha256 hex digests by (file, kind), valid while the file's size and mtime are unchanged.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: Mutex<HashMap<String, CachedHash>>,
    file: Option<PathBuf>,
}

impl HashCache {
    /// A cache persisted to `file` (loaded now when it exists; a broken file starts empty).
    pub fn persistent(file: PathBuf) -> Self {
        let entries = std::fs::read_to_string(&file).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
        HashCache { entries: Mutex::new(entries), file: Some(file) }
    }

    pub fn in_memory() -> Self {
        HashCache::default()
    }

    /// The full sha256 hex of `path` (as `kind` defines it), computed at most once per version.
    pub fn sha256(&self, path: &Path, kind: HashKind) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let mtime_ns = meta.modified()?.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let key = format!("{kind:?}:{}", path.display());
        {
            let entries = self.lock();
            if let Some(hit) = entries.get(&key).filter(|h| h.size == meta.len() && h.mtime_ns == mtime_ns) {
                return Ok(hit.sha256.clone());
            }
        }
        let started = std::time::Instant::now();
        let sha256 = match kind {
            HashKind::WholeFile => hash_from(path, 0)?,
            HashKind::SafetensorsData => hash_from(path, read_header(path)?.data_offset)?,
        };
        tracing::debug!(file = %path.display(), ?kind, elapsed_ms = started.elapsed().as_millis() as u64, "hashed");
        let mut entries = self.lock();
        entries.insert(key, CachedHash { size: meta.len(), mtime_ns, sha256: sha256.clone() });
        if let Some(file) = &self.file {
            // Best effort: a read-only place only costs rehashing after a restart.
            if let Ok(text) = serde_json::to_string(&*entries) {
                if let Err(e) = std::fs::write(file, text) {
                    tracing::debug!(file = %file.display(), error = %e, "hash cache not saved");
                }
            }
        }
        Ok(sha256)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedHash>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn hash_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_and_data_hashes_are_sha256_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, b"abc").unwrap();
        let cache = HashCache::persistent(dir.path().join("hashes.json"));
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(cache.sha256(&path, HashKind::WholeFile).unwrap(), abc);
        // Served from the persisted cache by a new instance.
        let again = HashCache::persistent(dir.path().join("hashes.json"));
        assert_eq!(again.lock().len(), 1);
        assert_eq!(again.sha256(&path, HashKind::WholeFile).unwrap(), abc);

        // A safetensors file whose data is "abc" padded: the data hash skips the header.
        let st = dir.path().join("x.safetensors");
        let header = br#"{"w":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"abc");
        std::fs::write(&st, bytes).unwrap();
        assert_eq!(cache.sha256(&st, HashKind::SafetensorsData).unwrap(), abc);
        assert_ne!(cache.sha256(&st, HashKind::WholeFile).unwrap(), abc);
    }
}

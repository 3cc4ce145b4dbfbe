//! What a single-file checkpoint holds, read from its safetensors header alone (names and
//! shapes; no tensor data), and the refusal of pickle files.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::CheckpointError;

/// File extensions of pickle-based checkpoints (`torch.save`): loading one runs whatever code
/// it carries, so they are refused rather than parsed.
const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl"];

/// Tensor names and shapes of one safetensors file.
#[derive(Debug, Clone, Default)]
pub struct CheckpointHeader {
    shapes: HashMap<String, Vec<usize>>,
}

impl CheckpointHeader {
    /// Refuse pickles, then read the header of a `.safetensors` file.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        refuse_pickle(path)?;
        let source = crate::backend::models::tensor_map::open_safetensors(&[path.to_path_buf()]).map_err(|e| {
            if looks_like_pickle(path) {
                CheckpointError::Pickle { path: path.to_path_buf() }
            } else {
                CheckpointError::Unreadable { path: path.to_path_buf(), reason: e.to_string() }
            }
        })?;
        let shapes = source.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect();
        Ok(CheckpointHeader { shapes })
    }

    /// A header over given names and shapes (tests, and files already open).
    pub fn from_shapes(shapes: HashMap<String, Vec<usize>>) -> Self {
        CheckpointHeader { shapes }
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Dimension `dim` of tensor `name`, if both exist.
    pub fn dim(&self, name: &str, dim: usize) -> Option<usize> {
        self.shape(name).and_then(|s| s.get(dim).copied())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }

    /// Distinct values of the numeric path component right after `prefix` (`prefix` ends with a
    /// dot): `indices("input_blocks.")` = every input block index present.
    pub fn indices(&self, prefix: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .names()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|rest| rest.split('.').next())
            .filter_map(|index| index.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }
}

/// Pickle checkpoints are refused by extension before anything is read.
pub fn refuse_pickle(path: &Path) -> Result<(), CheckpointError> {
    let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    if PICKLE_EXTENSIONS.contains(&extension.as_str()) {
        return Err(CheckpointError::Pickle { path: path.to_path_buf() });
    }
    Ok(())
}

/// Whether a file that failed to parse as safetensors is a renamed pickle: a zip archive (what
/// `torch.save` writes since torch 1.6) or a raw pickle stream (PROTO opcode 0x80, protocol
/// 2..=5). Only asked after parsing failed: a safetensors header length can start with any
/// bytes, so this is no test for a file that parses.
fn looks_like_pickle(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut magic)).unwrap_or(0);
    read >= 2 && (magic.starts_with(b"PK\x03\x04") || (magic[0] == 0x80 && (2..=5).contains(&magic[1])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickles_are_refused_by_name_and_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("model.ckpt");
        std::fs::write(&ckpt, b"anything").unwrap();
        let err = CheckpointHeader::read(&ckpt).unwrap_err();
        assert!(matches!(err, CheckpointError::Pickle { .. }));
        assert!(err.to_string().contains(".safetensors"), "{err}");
        let disguised = dir.path().join("model.safetensors");
        std::fs::write(&disguised, b"PK\x03\x04zip").unwrap();
        assert!(matches!(CheckpointHeader::read(&disguised), Err(CheckpointError::Pickle { .. })));
        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not a safetensors file").unwrap();
        assert!(matches!(CheckpointHeader::read(&garbage), Err(CheckpointError::Unreadable { .. })));
    }

    #[test]
    fn indices_lists_numeric_children() {
        let header = CheckpointHeader::from_shapes(
            [("a.0.x", vec![1]), ("a.2.y", vec![1]), ("a.10.z", vec![1]), ("a.b.w", vec![1]), ("ab.3", vec![1])]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        assert_eq!(header.indices("a."), vec![0, 2, 10]);
    }
}

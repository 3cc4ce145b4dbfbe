//! Reading `.safetensors` files one tensor at a time with plain reads instead of a memory map.
//!
//! Pages of a mapped file count in the process's RSS once touched and stay until the whole
//! mapping goes, so loading an f16 UNet (1.7 GB) into f32 through a map peaked at the f32
//! weights plus the whole f16 file: 5.3 GiB for SD 1.5 against 4.0 GiB resident after. Here each
//! tensor's bytes are read into a buffer of that tensor's size, converted and dropped, so loading
//! peaks at the converted weights plus about one tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::Deserialize;

use crate::backend::models::error::ModelError;
use crate::backend::models::safetensors_header::read_raw_header;

/// One entry of the JSON header.
#[derive(Debug, Deserialize)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range within the data section (after the header).
    data_offsets: (u64, u64),
}

/// An open `.safetensors` file with its parsed header.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let invalid = |why: String| ModelError::InvalidWeights { path: path.to_path_buf(), why };
        let mut file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::MissingFile { path: path.to_path_buf() },
            _ => invalid(e.to_string()),
        })?;
        let file_len = file.metadata().map_err(|e| invalid(e.to_string()))?.len();
        let (data_start, header) = read_raw_header(&mut file, path).map_err(|e| invalid(format!("safetensors header: {e}")))?;
        let serde_json::Value::Object(mut header) = header else {
            return Err(invalid("the safetensors header is not a JSON object".to_string()));
        };
        header.remove("__metadata__");
        let mut entries = BTreeMap::new();
        for (name, value) in header {
            let entry: Entry = serde_json::from_value(value).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
            let (start, end) = entry.data_offsets;
            if start > end || data_start + end > file_len {
                return Err(invalid(format!("tensor {name}: bytes {start}..{end} outside the file")));
            }
            entries.insert(name, entry);
        }
        Ok(Self { path: path.to_path_buf(), file, data_start, entries })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Reads tensor `name` onto `device` in its stored dtype.
    pub fn load(&mut self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        let invalid = |why: String| ModelError::InvalidWeights { path: self.path.clone(), why };
        let entry = self.entries.get(name).ok_or_else(|| invalid(format!("no tensor {name}")))?;
        let (start, end) = entry.data_offsets;
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file.seek(SeekFrom::Start(self.data_start + start)).and_then(|_| self.file.read_exact(&mut bytes)).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
        // Checks that the byte count matches dtype x shape.
        let view = TensorView::new(entry.dtype, entry.shape.clone(), &bytes).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
        Ok(view.load(device)?)
    }
}

/// The tensors of `files` that `rename` maps to a new name (`None` skips the tensor, which is
/// then never read), converted to `dtype` on `device`, in file then name order.
pub fn read_tensors(files: &[PathBuf], dtype: DType, device: &Device, mut rename: impl FnMut(&str) -> Option<String>) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mut out = Vec::new();
    for path in files {
        let mut file = SafetensorsFile::open(path)?;
        let wanted: Vec<(String, String)> = file.names().filter_map(|name| rename(name).map(|new| (name.to_string(), new))).collect();
        for (name, new_name) in wanted {
            let tensor = file.load(&name, device)?.to_dtype(dtype)?;
            out.push((new_name, tensor));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (*n, *t)), None, path).unwrap();
    }

    #[test]
    fn reads_every_dtype_back_converted_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((3, 4)).unwrap();
        let b = a.to_dtype(DType::F16).unwrap();
        let c = a.to_dtype(DType::BF16).unwrap().narrow(0, 0, 2).unwrap();
        let ids = Tensor::new(&[5i64, 7], &dev).unwrap();
        let (one, two) = (dir.path().join("1.safetensors"), dir.path().join("2.safetensors"));
        write(&one, &[("a", &a), ("b", &b)]);
        write(&two, &[("c", &c), ("ids", &ids)]);
        let got = read_tensors(&[one, two], DType::F32, &dev, |n| (n != "ids").then(|| format!("x.{n}"))).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x.a", "x.b", "x.c"]);
        for (_, t) in &got {
            assert_eq!(t.dtype(), DType::F32);
        }
        assert_eq!(got[1].1.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        assert_eq!(got[2].1.dims(), &[2, 4]);
    }

    #[test]
    fn truncated_or_inconsistent_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        write(&path, &[("w", &t)]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
        assert!(matches!(SafetensorsFile::open(&path), Err(ModelError::InvalidWeights { .. })));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(SafetensorsFile::open(&path).is_err());
        let missing = dir.path().join("none.safetensors");
        assert!(matches!(SafetensorsFile::open(&missing), Err(ModelError::MissingFile { .. })));
    }
}

//! The JSON header of a `.safetensors` file, read without touching the tensor data: its
//! `__metadata__` strings (kohya's `ss_output_name`, `sshs_model_hash`, ...) and where the data
//! starts (kohya's / A1111's LoRA hash covers the data only).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// safetensors itself refuses headers above 100 MB.
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Byte offset of the first tensor byte: 8 + the header length.
    pub data_offset: u64,
    /// `__metadata__`, string values only (as the format requires).
    pub metadata: BTreeMap<String, String>,
}

pub fn read_header(path: &Path) -> std::io::Result<SafetensorsHeader> {
    let mut file = std::fs::File::open(path)?;
    let (data_offset, header) = read_raw_header(&mut file, path)?;
    let metadata = header
        .get("__metadata__")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default();
    Ok(SafetensorsHeader { data_offset, metadata })
}

/// Reads the 8-byte length and the JSON header from the start of `file` (named `path` in
/// errors), leaving it at the first data byte; returns that byte's offset and the parsed header.
pub(crate) fn read_raw_header(file: &mut impl Read, path: &Path) -> std::io::Result<(u64, serde_json::Value)> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let mut length = [0u8; 8];
    file.read_exact(&mut length)?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER_BYTES {
        return Err(invalid(format!("safetensors header of {length} bytes")));
    }
    let mut json = vec![0u8; length as usize];
    file.read_exact(&mut json)?;
    let header = serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    Ok((8 + length, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn reads_metadata_and_data_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let meta = std::collections::HashMap::from([("ss_output_name".to_string(), "my_lora".to_string())]);
        safetensors::serialize_to_file([("w", &t)], Some(meta), &path).unwrap();
        let header = read_header(&path).unwrap();
        assert_eq!(header.metadata.get("ss_output_name").map(String::as_str), Some("my_lora"));
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size - header.data_offset, 12, "three f32 values after the header");
    }
}
